"""Adapter methods: one contract every registered method meets (typed config, budget,
save/load/harden, resumable state), the shared budget rule, and AdaLoRA on equal terms."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import collate, default_params, make_method, make_run, run_cfg, separable_rows, tiny_bert, trainable
from wattpeft.data.loading import make_collator
from wattpeft.evaluation.evaluate import evaluate_model
from wattpeft.methods import get_method, load_export, method_config, method_names
from wattpeft.methods.base import TASK_HEADS, count_params
from wattpeft.methods.gated_lora import GATES_NAME as LORA_GATES_NAME
from wattpeft.methods.gated_lora import GatedLoraMethod
from wattpeft.methods.spectral import GATES_NAME
from wattpeft.methods.spectral_method import SpectralMethod
from wattpeft.methods.budget import BudgetError, Target, allocate, spread_order
from wattpeft.methods.params import MethodConfigError
from wattpeft.training.checkpoint import latest_checkpoint
from wattpeft.training.validation import validation_metrics

METHODS = method_names()
GATED = {name for name in METHODS if issubclass(get_method(name), (SpectralMethod, GatedLoraMethod))}
# Methods whose size the budget rule sets (the others: their config, e.g. dictionary atoms).
BUDGETED = [name for name in METHODS if get_method(name).sized_by_budget]
STATS_KEYS = {
    "budget_pct", "achieved_budget_pct", "adapter_params", "effective_adapter_params",
    "trainable_params", "backbone_params", "rank", "rank_rule",
}


def assert_same_state(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    else:
        assert a == b


def is_head(name):
    return bool(set(name.split(".")) & set(TASK_HEADS))


def is_controller(name):
    return bool({GATES_NAME, LORA_GATES_NAME} & set(name.split(".")))


def fresh_head_backbone():
    """The tiny BERT with a newly drawn classification head: the harden stage loads the
    pretrained backbone again, and a classification head is initialised at random each time."""
    model = tiny_bert()
    torch.manual_seed(1234)
    model.classifier.reset_parameters()
    return model


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def harden_tolerance(hardened, trained_logits, base_logits):
    """What hardening may change in the trained logits: nothing for merged adapters (float32
    rounding); for gated adapters that stay apart (16-bit or int8 directions), 1% of how far
    training moved the logits (here about 5% of the adapter's own share, several times the
    rounding seen; test_spectral.py bounds the rounding itself). The energy cap is switched
    off: it drops directions on purpose (tested in test_spectral.py)."""
    gates = getattr(hardened, GATES_NAME, None)
    if gates is None:
        return 1e-5
    gates.e_max = None
    return 1e-5 + 0.01 * float((trained_logits - base_logits).abs().max())


# ---------------------------------------------------------------- the contract, for every method


@pytest.mark.parametrize("name", METHODS)
def test_config_rejects_an_unknown_key_by_name(name):
    with pytest.raises(MethodConfigError, match=rf"families\.s\.methods\.{name}\.alhpa: unknown key; known: .*alpha"):
        method_config(name).from_params({"alhpa": 16}, where=f"families.s.methods.{name}")
    with pytest.raises(ValueError, match="alhpa"):
        make_method(name, {"alhpa": 16})


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize(("params", "message"), [
    ({"dropout": 1.0}, r"\.dropout: must be in \[0, 1\), got 1.0 \(float\)"),
    ({"alpha": 0}, r"\.alpha: must be > 0"),
    ({"rank": 0}, r"\.rank: must be >= 1"),
    ({"rank": "8"}, r"\.rank: expected int or None, got '8' \(str\)"),
    ({"rank": 2.0}, r"\.rank: expected int or None"),
    ({"target_modules": "query"}, r"\.target_modules: expected a list of str or None"),
    ({"budget_tolerance_pct": True}, r"\.budget_tolerance_pct: expected float"),
])
def test_config_checks_types_and_ranges(name, params, message):
    with pytest.raises(MethodConfigError, match=message):
        method_config(name).from_params(params)


@pytest.mark.parametrize("name", METHODS)
def test_config_is_typed_and_shares_the_common_fields(name):
    config = method_config(name).from_params({"dropout": 0, "target_modules": ["query"]})
    assert config.dropout == 0.0 and isinstance(config.dropout, float)
    assert config.budget_tolerance_pct == 10.0 and config.rank is None
    assert {"alpha", "dropout", "target_modules", "rank", "budget_tolerance_pct"} <= method_config(name).field_names()
    assert isinstance(make_method(name).config, method_config(name))


@pytest.mark.parametrize("name", METHODS)
def test_a_method_refuses_alpha_exactly_when_it_has_no_lora_scaling(name):
    from wattpeft.methods.spectral_config import GateConfig

    # Configs that declare no LoRA scaling (GateConfig's): the spectral methods, and HIMALAYA,
    # whose update is self-normalised.
    if issubclass(method_config(name), GateConfig):
        reason = "spectral methods have none" if issubclass(get_method(name), SpectralMethod) else f"{name}'s .* has none"
        with pytest.raises(MethodConfigError, match=rf"{name}\.alpha: is a LoRA scaling; {reason}"):
            method_config(name).from_params({"alpha": 16}, where=name)
    else:
        assert method_config(name).from_params({"alpha": 16}).alpha == 16.0


@pytest.mark.parametrize("name", METHODS)
def test_importing_a_config_does_not_import_torch(name):
    code = (
        "import sys; from wattpeft.methods import method_config; "
        f"method_config({name!r}).from_params({{}}); "
        "assert 'torch' not in sys.modules and 'peft' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", METHODS)
def test_attach_meets_the_budget_and_trains_only_adapters(name):
    method = make_method(name)
    backbone = tiny_bert()
    n_backbone = count_params(backbone)
    backbone_ids = {id(p) for p in backbone.parameters()}
    model = method.attach(backbone)
    stats = method.stats
    assert STATS_KEYS <= set(stats)
    assert stats["backbone_params"] == n_backbone
    if method.sized_by_budget:
        assert stats["rank_rule"] == "budget"
        assert abs(stats["achieved_budget_pct"] - 5.0) / 5.0 * 100 <= method.config.budget_tolerance_pct
    else:  # sized by its config: the budget it reaches is reported, not imposed
        assert stats["rank_rule"] == "config"
        assert stats["achieved_budget_pct"] == pytest.approx(100 * stats["effective_adapter_params"] / n_backbone)
    assert stats["effective_adapter_params"] == stats["planned_adapter_params"]
    # Trainable = adapter + the task head (trained whole) + the gates' controller, if any;
    # the backbone's own weights stay frozen.
    params = dict(model.named_parameters())
    head = {n for n, p in params.items() if p.requires_grad and is_head(n)}
    controller = {n for n, p in params.items() if p.requires_grad and is_controller(n)}
    adapter = {n for n, p in params.items() if p.requires_grad} - head - controller
    assert head, "the classification head must train"
    assert adapter and not any(id(params[n]) in backbone_ids for n in adapter), "a backbone weight trains"
    assert stats["adapter_params"] == sum(params[n].numel() for n in adapter)
    assert stats["controller_params"] == sum(params[n].numel() for n in controller)
    assert (stats["controller_params"] > 0) == (name in GATED)
    assert stats["trainable_params"] == count_params(model, trainable_only=True)
    assert stats["rank_max"] - stats["rank_min"] <= 1 and stats["rank"] >= 1


@pytest.mark.parametrize("name", BUDGETED)
def test_a_too_small_budget_is_refused(name):
    with pytest.raises(ValueError, match=r"too small for rank 1.*smallest budget that works here is [\d.]+%.*fewer target_modules"):
        make_method(name, budget=1.0).attach(tiny_bert())


@pytest.mark.parametrize("name", BUDGETED)
def test_a_fixed_rank_bypasses_the_rule_and_reports_the_budget(name):
    method = make_method(name, {"rank": 3}, budget=1.0)  # 1% is too small for the rule
    method.attach(tiny_bert())
    stats = method.stats
    assert stats["rank_rule"] == "fixed" and stats["rank"] == 3 and stats["rank_min"] == stats["rank_max"] == 3
    assert stats["achieved_budget_pct"] == pytest.approx(100 * stats["effective_adapter_params"] / stats["backbone_params"])


@pytest.mark.parametrize("name", METHODS)
def test_save_load_and_harden_give_the_trained_logits(tmp_path, name):
    method, model, trainer = make_run(name, run_cfg(epochs=1))
    trainer.train()
    method.save(model, tmp_path / "adapter")
    batch = collate(separable_rows(8, seed=3))
    batch.pop("labels")
    expected = logits_of(model, batch)
    hardened = method.harden(method.load(fresh_head_backbone(), tmp_path / "adapter"))
    assert not any(p.requires_grad for n, p in hardened.named_parameters() if not (is_head(n) or is_controller(n)))
    atol = harden_tolerance(hardened, expected, logits_of(tiny_bert(), batch))
    torch.testing.assert_close(logits_of(hardened, batch), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trips(tmp_path, name):
    method, model, trainer = make_run(name, run_cfg(max_steps=10))  # AdaLoRA: pruning done
    trainer.train()
    torch.save(method.state_dict(model), tmp_path / "state.pt")  # as a checkpoint stores it
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    fresh = make_method(name, total_steps=10)
    fresh_model = fresh.attach(tiny_bert())
    fresh.load_state_dict(fresh_model, state)
    assert_same_state(fresh.state_dict(fresh_model), method.state_dict(model))
    assert fresh.stats == method.stats


@pytest.mark.parametrize("name", METHODS)
def test_export_reloads_through_the_registry_and_evaluates(tmp_path, name):
    """attach, train, save, load onto a fresh backbone, harden, export: the registry reloads
    the export (export.json names the method) into the same model, and evaluation runs on it."""
    method, model, trainer = make_run(name, run_cfg(max_steps=2))
    trainer.train()
    method.save(model, tmp_path / "adapter")
    loader = make_method(name, total_steps=1, inputs={})  # as the harden stage: no other runs needed
    hardened = loader.harden(loader.load(fresh_head_backbone(), tmp_path / "adapter"))
    export = tmp_path / "export"
    export.mkdir()
    card = loader.export(hardened, export)
    assert isinstance(card, dict)
    (export / "export.json").write_text(json.dumps({"method": name, **card}))
    label_names = ["neg", "pos"]
    reloaded = load_export(export, "classification", label_names)

    rows = separable_rows(6, seed=4)
    rows[1]["input_ids"] = rows[1]["input_ids"][:7]  # a padded row
    batch = collate(rows)
    batch.pop("labels")
    torch.testing.assert_close(logits_of(reloaded, batch), logits_of(hardened, batch), rtol=0, atol=1e-6)
    assert get_method(name).inference_stats(reloaded).keys() == get_method(name).inference_stats(hardened).keys()

    frame = pd.DataFrame({"input_ids": [r["input_ids"] for r in rows], "label": [r["label"] for r in rows]})
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=None)
    result = evaluate_model(reloaded, tokenizer, frame, "classification", label_names=label_names, batch_size=4,
                            latency_samples=2, progress=False)
    metrics = result["metrics"]
    assert len(result["predictions"]) == len(rows)
    core = ("accuracy", "macro_f1", "eval_loss", "latency_p50_ms", "latency_mean_ms")  # p90+ need more passes
    assert all(math.isfinite(metrics[key]) for key in core), metrics


# ---------------------------------------------------------------- the budget rule


def targets(*specs):
    return [Target(name, i, o) for name, i, o in specs]


def test_budget_rule_gives_exact_ranks():
    layers = targets(("l.0.a", 4, 6), ("l.0.b", 10, 10), ("l.1.a", 4, 6), ("l.1.b", 10, 10))
    # B = 100, one rank everywhere costs 60: r* = 1.67, base 1, then +1 in the order
    # l.0.a, l.1.a, l.0.b (lands on 100 exactly), l.1.b (would overshoot).
    alloc = allocate(layers, backbone_params=1000, budget_pct=10.0)
    assert alloc.ranks == {"l.0.a": 2, "l.0.b": 2, "l.1.a": 2, "l.1.b": 1}
    assert (alloc.params, alloc.total_rank, alloc.achieved_pct, alloc.rule) == (100, 7, 10.0, "budget")
    # A singular value per rank (AdaLoRA) adds one parameter per rank to every cost.
    assert allocate(layers, 1000, 10.0, extra_per_rank=1).costs == {"l.0.a": 11, "l.0.b": 21, "l.1.a": 11, "l.1.b": 21}


def test_budget_rule_spreads_the_extra_ranks_across_layers():
    names = ["enc.layer.0.q", "enc.layer.0.v", "enc.layer.1.q", "enc.layer.1.v", "enc.layer.10.q", "pooler.dense"]
    assert spread_order(names) == [
        "enc.layer.0.q", "enc.layer.1.q", "enc.layer.10.q", "pooler.dense", "enc.layer.0.v", "enc.layer.1.v",
    ]
    layers = targets(*[(f"layer.{i}.{m}", 8, 8) for i in range(4) for m in "qv"])
    alloc = allocate(layers, backbone_params=10_000, budget_pct=2.0)  # 200 = 8 x 16 + 4.5 x 16
    assert set(alloc.ranks.values()) == {1, 2}
    assert [alloc.ranks[f"layer.{i}.q"] for i in range(4)] == [2, 2, 2, 2]  # one per layer first
    assert alloc.params == 192


def test_budget_rule_refuses_a_budget_below_rank_one():
    with pytest.raises(BudgetError, match=r"budget 5% .* too small for rank 1 on the 1 target modules.*smallest budget that works here is 10%"):
        allocate(targets(("l.0.a", 50, 50)), backbone_params=1000, budget_pct=5.0)


def test_budget_rule_refuses_a_budget_it_cannot_reach_within_tolerance():
    one = targets(("l.0.a", 50, 50))  # ranks cost 100 each
    with pytest.raises(BudgetError, match=r"28.6% off; budget_tolerance_pct is 10"):
        allocate(one, backbone_params=1000, budget_pct=14.0)  # 140: rank 1 gives 100
    assert allocate(one, 1000, 14.0, tolerance_pct=30.0).ranks == {"l.0.a": 1}
    assert allocate(one, 1000, 19.0).ranks == {"l.0.a": 2}  # 190: rank 2 (200) is closer than 100


def test_a_fixed_rank_is_uniform_and_never_refused():
    alloc = allocate(targets(("l.0.a", 50, 50), ("l.1.a", 50, 50)), 1000, 1.0, fixed_rank=3)
    assert alloc.ranks == {"l.0.a": 3, "l.1.a": 3} and alloc.rule == "fixed" and alloc.achieved_pct == 60.0


def test_lora_realises_the_per_module_ranks_in_peft():
    method = make_method("lora")
    model = method.attach(tiny_bert())
    built = {
        name.removeprefix("base_model.model."): module.lora_A["default"].out_features
        for name, module in model.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    assert built == method.allocation.ranks and len(set(built.values())) == 2


# ---------------------------------------------------------------- AdaLoRA on equal terms


def test_adalora_starts_at_init_rank_ratio_and_ends_at_the_budget():
    method, model, trainer = make_run("adalora", run_cfg())
    alloc = method.allocation
    assert method.stats["init_rank"] == math.ceil(1.5 * alloc.mean_rank)
    assert model.base_model.rankallocator.target_bgt == alloc.total_rank
    assert method.stats["budget_measured"] == "planned"
    trainer.train()
    stats = method.stats
    kept = sum(int(torch.count_nonzero(p)) for n, p in model.named_parameters() if "lora_E" in n)
    assert stats["budget_measured"] == "final mask"
    assert stats["kept_total_rank"] == kept == alloc.total_rank  # final budget = nominal, in ranks
    assert stats["initial_adapter_params"] > stats["effective_adapter_params"]
    assert stats["achieved_budget_pct"] == pytest.approx(100 * stats["effective_adapter_params"] / stats["backbone_params"])


def test_adalora_prunes_to_the_budget_even_when_the_final_pruning_step_is_skipped():
    # 12 steps, tinit 6, tfinal 2: budgets 19, 16, 15 at steps 7-9, final pruning at step 10.
    params = {"alpha": 16, "dropout": 0.1, "tinit_ratio": 0.5}
    method, model, trainer = make_run("adalora", run_cfg(), params=params)
    hook = method.after_optimizer_step
    skipped = (9, 10)  # as fp16 skips overflowing steps: the last mask left is step 8's
    method.after_optimizer_step = lambda m, step: None if step in skipped else hook(m, step)
    trainer.train()
    assert method.stats["kept_total_rank"] == method.allocation.total_rank


@pytest.mark.parametrize("kill_at", [11, 12])  # resume from step 10 (the final pruning) or 11
def test_adalora_resumes_exactly_after_the_final_pruning(tmp_path, kill_at):
    cfg = run_cfg(checkpoint_every=1)  # 12 steps; tinit 1, tfinal 2: final pruning at step 10
    ref_method, ref_model, ref_trainer = make_run("adalora", cfg, tmp_path / "ref")
    reference = ref_trainer.train()

    def kill(step):
        if step == kill_at:
            raise KeyboardInterrupt

    _, _, doomed = make_run("adalora", cfg, tmp_path / "run", on_step_end=kill)
    with pytest.raises(KeyboardInterrupt):
        doomed.train()
    assert latest_checkpoint(tmp_path / "run").name == f"step-{kill_at - 1:07d}"

    method, model, resumed = make_run("adalora", cfg, tmp_path / "run")
    outcome = resumed.train()
    assert outcome.resumed_from_step == kill_at - 1
    expected = trainable(ref_model)
    for name, value in trainable(model).items():
        assert torch.equal(value, expected[name]), name
    assert outcome.validation == reference.validation
    assert method.stats == ref_method.stats


def test_validation_loss_leaves_out_the_adalora_penalty():
    method = make_method("adalora", {"dropout": 0.0, "orth_reg_weight": 0.5})
    model = method.attach(tiny_bert())
    rows = separable_rows(16, seed=2)
    batch = collate(rows)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plain = F.cross_entropy(logits, batch["labels"]).item()
        penalised = model(**batch).loss.item()
    got = validation_metrics(model, rows, collate, "classification")["eval_loss"]
    assert got == pytest.approx(plain, rel=1e-6)
    assert penalised > plain + 1e-3  # peft adds orth_reg_weight x the orthogonality penalty
    model.train()
    with torch.no_grad():
        assert model(**batch).loss.item() != pytest.approx(got, rel=1e-3)


def test_validation_loss_of_a_causal_lm_is_the_shifted_token_cross_entropy():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )).eval()
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 3 + list(range(8, 5 + n))} for n in (9, 6)]
    lm_collate = make_collator("summarisation", pad_id=0)
    batch = lm_collate(rows)
    with torch.no_grad():
        expected = model(**batch).loss.item()  # transformers' own shifted, -100-ignoring mean
    got = validation_metrics(model, rows, lm_collate, "summarisation")["eval_loss"]
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_a_roberta_head_is_not_a_target(name):
    """RoBERTa's classification head holds `classifier.dense`; peft trains the head whole, so
    the budget rule must not count it as an adapted `dense` layer (seed 004's backbone)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=2))  # MLP as wide as the model: every dense is square (HIMALAYA)
    # Every linear layer of a block (the default of most methods; gated LoRA's is q and v).
    method = make_method(name, {**default_params(name), "target_modules": ["query", "key", "value", "dense"]})
    method.attach(model)  # raises if peft built other parameters than the rule counted
    assert method.stats["n_target_modules"] == 2 * 6  # q, k, v, attention/intermediate/output dense
