"""Gated LoRA with a hardware cost (DiGASE, EChorda, MetaS-PEFT): gradients from the task loss
and from each cost reach every gate, DiGASE has no head gate, EChorda's table checks, hardening
removes layers/heads/ranks physically and changes no output, the named loss terms in the
training log, and the gates' own parameter group. The contract every method meets is in
test_methods.py."""

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from helpers import (TARGET_DEVICE, collate, device_table, make_method, make_run, required_inputs, run_cfg,
                     separable_rows, surrogate)
from wattpeft.data.loading import make_collator
from wattpeft.evaluation.device_cost import deployed_configuration
from wattpeft.methods import get_method, load_export
from wattpeft.methods.base import count_params
from wattpeft.methods.gated_lora import GATES_NAME, GatedLoraLinear, NoHeads, base_linear
from wattpeft.methods.params import MethodConfigError

GATED = ("digase", "echorda", "metas_peft")
COST_TERMS = {"digase": ["loss_cost"], "echorda": ["loss_energy"],
              "metas_peft": ["loss_energy", "loss_latency", "loss_power"]}


def bert(layers=2, heads=2, seed=0):
    """The tiny BERT's widths (the device table and the surrogate are for 2 layers x 2 heads)."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=64,
        num_labels=2, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def llama(layers=4, heads=4, kv_heads=4, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                        num_attention_heads=heads, num_key_value_heads=kv_heads,
                                        max_position_embeddings=64))


def padded_batch():
    rows = separable_rows(6, seed=4)
    rows[1]["input_ids"] = rows[1]["input_ids"][:7]
    batch = collate(rows)
    labels = batch.pop("labels")
    return batch, labels


def lm_batch():
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 3 + list(range(8, 5 + n))} for n in (9, 6)]
    batch = make_collator("summarisation", pad_id=0)(rows)
    batch.pop("labels")
    return batch


def gated(name, model, params=None, task="classification"):
    """`name` attached to `model` with random LoRA B (B = 0 would hide the rank gates'
    gradient and make every rank look alike)."""
    params = {"alpha": 8, "dropout": 0.0, **(params or {})}
    if name == "echorda":
        params.setdefault("target_device", TARGET_DEVICE)
    method = get_method(name)(params, 5.0, task, 10, required_inputs(name))
    model = method.attach(model)
    with torch.no_grad():
        for module in method.modules.values():
            module.lora_B.normal_(0, 0.5)
    return method, model


def valid_gate_grads(method):
    """{kind: gradient of each gate that exists} (ranks a module does not have left out)."""
    grads = {kind: gate.log_alpha.grad for kind, gate in method.bank.gates().items()}
    grads["ranks"] = grads["ranks"][method.bank.rank_valid]
    return grads


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", GATED)
def test_the_task_loss_reaches_every_gate(name):
    method, model = gated(name, bert())
    with torch.no_grad():  # gates inside (0, 1) in most samples: such a draw carries a gradient
        for gate in method.bank.gates().values():
            gate.log_alpha.zero_()
    model.train()
    batch, labels = padded_batch()
    torch.manual_seed(0)
    for _ in range(8):  # a gate drawn exactly 0 or 1 has no gradient in that pass
        model(**batch, labels=labels).loss.backward()
    for kind, grad in valid_gate_grads(method).items():
        assert grad is not None and (grad != 0).all(), kind


@pytest.mark.parametrize("name", GATED)
def test_each_cost_reaches_every_gate_and_matches_finite_differences(name):
    """Through the FLOPs proxy (DiGASE), the ridge regression (EChorda) and the frozen surrogate
    (MetaS-PEFT): autograd's gradient of each cost term is the finite difference's."""
    method, model = gated(name, bert())
    with torch.no_grad():
        for gate in method.bank.gates().values():
            gate.log_alpha.copy_(torch.linspace(-1.0, 2.0, gate.log_alpha.numel()).view_as(gate.log_alpha))
    for term in COST_TERMS[name]:
        for gate in method.bank.gates().values():
            gate.log_alpha.grad = None
        method.cost.terms(method.expected_s())[term].backward()
        for kind, grad in valid_gate_grads(method).items():
            assert (grad != 0).all(), (term, kind)
        gate = method.bank.layers.log_alpha
        with torch.no_grad():
            def cost_at(delta):
                gate[0] += delta
                value = float(method.cost.terms(method.expected_s())[term])
                gate[0] -= delta
                return value
            numeric = (cost_at(1e-2) - cost_at(-1e-2)) / 2e-2
        assert float(gate.grad[0]) == pytest.approx(numeric, rel=2e-2, abs=1e-6), term
    if name == "metas_peft":
        assert not any(p.requires_grad for p in surrogate()[0].parameters())  # frozen: only the gates learn


def test_digase_has_no_head_gate_and_trains_a_grouped_query_model():
    method, model = gated("digase", bert())
    assert method.bank.heads is None and method.stats["gated"] == ["layers", "ranks"]
    assert method.expected_s()["kept_heads"].item() == 2.0
    method, model = gated("digase", llama(kv_heads=2), task="summarisation")
    assert model(**lm_batch()).logits.shape[-1] == 60


@pytest.mark.parametrize("name", ["echorda", "metas_peft"])
def test_head_gates_refuse_a_grouped_query_model(name):
    with pytest.raises(ValueError, match=r"grouped-query attention \(num_key_value_heads 2 < num_attention_heads 4\)"):
        gated(name, llama(kv_heads=2), task="summarisation")


# ---------------------------------------------------------------- what EChorda and MetaS-PEFT read


def test_echorda_refuses_a_table_with_too_few_target_rows():
    table = device_table()
    few = table[(table["device"] != TARGET_DEVICE) | (table.index % 10 == 0)]
    n_target = int((few["device"] == TARGET_DEVICE).sum())
    with pytest.raises(ValueError, match=rf"holds {n_target} rows with a measured energy for target device "
                                         rf"'{TARGET_DEVICE}', fewer than n_measurements = 200"):
        make_method("echorda", inputs={"device_table": few}).attach(bert())
    method = make_method("echorda", {"n_measurements": n_target, "alpha": 8}, inputs={"device_table": few})
    method.attach(bert())
    assert method.stats["on_device_measurements"] == n_target
    assert method.stats["target_device_source"] == ["simulated"]
    with pytest.raises(ValueError, match=r"target_device 'Pi-5' is not in the device table; set target_device to "
                                         r"one of \['Jetson-Orin-NX', 'MacBook-M2', 'Raspberry-Pi-4'\]"):
        make_method("echorda", {"target_device": "Pi-5"}).attach(bert())
    with pytest.raises(ValueError, match="echorda: needs the device table"):
        make_method("echorda", inputs={}).attach(bert())


def test_echorda_fits_the_regression_on_the_target_device_only():
    method = make_method("echorda")
    method.attach(bert())
    stats = method.stats
    assert stats["on_device_measurements"] == 200 and stats["target_device"] == TARGET_DEVICE
    assert set(method.cost.rows["device"]) == {TARGET_DEVICE} and stats["regression_r2_log_energy"] > 0.8
    assert stats["energy_budget_j"] == stats["full_prediction"]["energy_j"]  # no budget: the full model's


def test_metas_peft_uses_the_calibrated_surrogate_and_checks_its_backbone():
    method = make_method("metas_peft")
    method.attach(bert())
    model, calibration = surrogate()
    assert method.stats["on_device_measurements"] == 5 == max(calibration.points)
    assert method.stats["target_device_role"] == "unseen, calibrated"
    with torch.no_grad():
        expected = model.predict(model.features(method.full), model.tag(None, 1), calibration)
    assert method.stats["full_prediction"]["latency_ms"] == pytest.approx(float(expected[1][0]))
    on_training_device = make_method("metas_peft", {"target_device": "MacBook-M2"})
    on_training_device.attach(bert())
    assert on_training_device.stats["on_device_measurements"] == 0
    with pytest.raises(ValueError, match="trained for a backbone with 2 layers and 2 heads; this model has 3 and 2"):
        make_method("metas_peft").attach(bert(layers=3))
    with pytest.raises(ValueError, match="needs the meta-surrogate"):
        make_method("metas_peft", inputs={}).attach(bert())
    with pytest.raises(ValueError, match=r"target_device 'Pixel-9' is neither a training device .* nor the device "
                                         r"it was calibrated on \('Raspberry-Pi-4'\)"):
        make_method("metas_peft", {"target_device": "Pixel-9"}).attach(bert())


@pytest.mark.parametrize(("name", "params", "message"), [
    ("echorda", {"n_measurements": 1}, r"\.n_measurements: must be >= 2"),
    ("metas_peft", {"n_measurements": 5}, r"\.n_measurements: unknown key"),
    ("digase", {"target_device": "MacBook-M2"}, r"\.target_device: unknown key"),
    ("digase", {"param_bits": 12}, r"\.param_bits: must be one of \[4, 8, 16, 32\]"),
    ("metas_peft", {"temperature": 0}, r"\.temperature: must be > 0"),
    ("echorda", {"energy_budget_j": -1}, r"\.energy_budget_j: must be > 0"),
])
def test_gated_configs_are_typed(name, params, message):
    from wattpeft.methods import method_config

    with pytest.raises(MethodConfigError, match=message):
        method_config(name).from_params(params)
    assert method_config(name).from_params({}).temperature == pytest.approx(2 / 3)


# ---------------------------------------------------------------- hardening


def set_gates(method, layers, heads=None):
    """Gates as given (log_alpha), ranks drawn so that some close, one module's all."""
    bank = method.bank
    with torch.no_grad():
        bank.layers.log_alpha.copy_(torch.tensor(layers))
        if heads is not None:
            bank.heads.log_alpha.copy_(torch.tensor(heads))
        draws = torch.randn(bank.ranks.log_alpha.shape, generator=torch.Generator().manual_seed(0))
        bank.ranks.log_alpha.copy_(draws * 3)
        bank.ranks.log_alpha[0] = -5.0


def lora_modules(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, GatedLoraLinear)}


def check_export(method, name, hardened, batch, task, tmp_path):
    card = method.export(hardened, tmp_path)
    (tmp_path / "export.json").write_text(json.dumps({"method": name, **card}))
    reloaded = load_export(tmp_path, task, ["neg", "pos"] if task == "classification" else None)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, hardened(**batch).logits, rtol=0, atol=1e-6)
    assert count_params(reloaded) == count_params(hardened)
    return card


def test_hardening_a_bert_removes_layers_heads_and_ranks(tmp_path):
    method, model = gated("echorda", bert(layers=4, heads=4), {"rank": 4, "target_device": TARGET_DEVICE})
    # layer 1 closed, layer 2 kept at a gate below 1; layer 3 keeps no head, layer 0 two.
    set_gates(method, [3.0, -5.0, 0.5, 3.0], [[3.0, -5.0, 0.3, -5.0], [3.0] * 4, [3.0] * 4, [-5.0] * 4])
    batch, _ = padded_batch()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    before = count_params(model)
    hardened = method.harden(model)
    with torch.no_grad():
        torch.testing.assert_close(hardened(**batch).logits, expected, rtol=0, atol=1e-5)
    layers = hardened.bert.encoder.layer
    assert len(layers) == 3 == hardened.config.num_hidden_layers
    assert not hasattr(hardened, GATES_NAME) and count_params(hardened) < before
    attention = layers[0].attention
    assert base_linear(attention.self.query).weight.shape == (16, 32) and attention.self.key.weight.shape == (16, 32)
    assert attention.output.dense.weight.shape == (32, 16) and attention.self.num_attention_heads == 2
    assert isinstance(layers[2].attention.self, NoHeads) and layers[2].attention.output.dense.weight.shape == (32, 0)
    ranks = {name: m.rank for name, m in lora_modules(hardened).items()}
    assert ranks["bert.encoder.layer.0.attention.self.query"] == 0  # every rank of module 0 closed
    for name, module in lora_modules(hardened).items():
        assert module.lora_A.shape[0] == module.lora_B.shape[1] == module.rank <= 4
    card = check_export(method, "echorda", hardened, batch, "classification", tmp_path)
    assert card["heads_per_layer"] == [2, 4, 0] and card["layer_scales"][1] == pytest.approx(0.647, abs=1e-3)
    # What the device-cost stage reads from the export is the configuration the method reports.
    hard = method.gate_stats()["hard_kept"]
    deployed = deployed_configuration(load_export(tmp_path, "classification", ["neg", "pos"]), 128, 16)
    assert {k: deployed[k] for k in hard} == pytest.approx(hard)


@pytest.mark.parametrize("name", ["digase", "echorda"])
def test_hardening_a_llama_removes_layers_and_renumbers_the_cache(tmp_path, name):
    params = {"rank": 4, "target_modules": ["q_proj", "v_proj", "o_proj"]}
    method, model = gated(name, llama(), params, task="summarisation")
    heads = [[3.0, -5.0, 0.3, 3.0], [3.0] * 4, [3.0, -5.0, 1.0, -5.0], [-5.0] * 4] if name == "echorda" else None
    set_gates(method, [3.0, -5.0, 0.5, 3.0], heads)
    batch = lm_batch()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    generated = model.generate(batch["input_ids"][:1, :5], max_new_tokens=4, do_sample=False)
    before = count_params(model)
    hardened = method.harden(model)
    with torch.no_grad():
        torch.testing.assert_close(hardened(**batch).logits, expected, rtol=0, atol=1e-5)
    # The KV cache's slots follow the kept layers: decoding gives what the gated model decodes.
    assert torch.equal(hardened.generate(batch["input_ids"][:1, :5], max_new_tokens=4, do_sample=False), generated)
    layers = hardened.model.layers
    assert len(layers) == 3 == hardened.config.num_hidden_layers and count_params(hardened) < before
    assert [layers[i].self_attn.layer_idx for i in range(2)] == [0, 1]
    if name == "echorda":
        assert base_linear(layers[0].self_attn.q_proj).weight.shape == (24, 32)
        assert base_linear(layers[0].self_attn.o_proj).weight.shape == (32, 24)
        assert isinstance(layers[2].self_attn, NoHeads)
    check_export(method, name, hardened, batch, "summarisation", tmp_path)


@pytest.mark.parametrize("name", GATED)
def test_stats_report_expected_and_hardened_counts_and_the_hardened_prediction(tmp_path, name):
    method, model, trainer = make_run(name, run_cfg(max_steps=2))
    trainer.train()
    method.save(model, tmp_path)
    stats = method.stats
    assert set(stats["expected_kept"]) == set(stats["hard_kept"]) == {"kept_layers", "kept_heads", "kept_ranks"}
    assert stats["hard_kept"]["kept_layers"] == 2.0 and stats["hard_kept"]["kept_heads"] == 2.0
    assert set(stats["hardened_prediction"]) == set(stats["full_prediction"])
    assert json.loads((tmp_path / "gated_adapter.json").read_text())["stats"] == json.loads(json.dumps(stats))


# ---------------------------------------------------------------- the trainer's hooks


@pytest.mark.parametrize("name", ["lora", *GATED])
def test_each_loss_term_is_logged_under_its_own_name(name):
    method, model, trainer = make_run(name, run_cfg(max_steps=4, log_every=1, gradient_accumulation_steps=1))
    outcome = trainer.train()
    records = [r for r in outcome.log if "loss" in r]
    expected = {"loss_task"} | ({"loss_l0", *COST_TERMS[name]} if name in GATED else set())
    for record in records:
        assert {k for k in record if k.startswith("loss_")} == expected
    last = records[-1]
    assert last["loss"] == pytest.approx(sum(last[k] for k in expected), rel=1e-5)  # log_every 1: one step
    if name in GATED:
        assert {k: last[k] for k in expected - {"loss_task"}} == method.loss_terms()


def test_gates_train_at_their_own_learning_rate_without_weight_decay():
    method, model, trainer = make_run("metas_peft", run_cfg(weight_decay=0.1), params={"gate_lr": 0.2})
    _, _, optimizer, _ = trainer._setup()
    adapter, gates = optimizer.param_groups
    assert {id(p) for p in gates["params"]} == {id(p) for p in method.bank.parameters()}
    assert (gates["initial_lr"], gates["weight_decay"]) == (0.2, 0.0)
    assert (adapter["initial_lr"], adapter["weight_decay"]) == (5e-3, 0.1)
    assert len(gates["params"]) + len(adapter["params"]) == len([p for p in model.parameters() if p.requires_grad])


def test_the_trainer_refuses_groups_that_miss_a_parameter():
    method, model, trainer = make_run("digase", run_cfg())
    method.param_groups = lambda m: [{"params": list(method.bank.parameters())}]
    with pytest.raises(ValueError, match="param_groups must hold every trainable parameter exactly once"):
        trainer._setup()
