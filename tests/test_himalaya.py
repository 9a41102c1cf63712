"""HIMALAYA (seed 003): unit per-token updates, bounded gates, growth within a fixed atom count,
Fisher consolidation, 3-bit storage, exact save/load, bounded adapter norm over a task stream.
On a tiny Llama causal LM (the contract items on the tiny BERT are in test_methods.py)."""

import copy
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from wattpeft.methods.himalaya.layer import (
    HimalayaLinear, gate_probabilities, pack_codes, quantise, restore, roundtrip_bound, store, top_gates,
    unpack_codes,
)
from wattpeft.methods.himalaya.model import ADAPTER_TENSORS, BANK_NAME, Method

D = 32
SMALL = {"core_atoms": 8, "elastic_atoms": 4, "router_hidden": 16, "task_embedding_dim": 4}  # 12 atoms < d


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64))


def lm_batch(seed, low=1, high=64, rows=4, length=12):
    ids = torch.randint(low, high, (rows, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def attached(params=None, tasks=("task0",), total_steps=20):
    method = Method({**SMALL, **(params or {})}, 5.0, "lm", total_steps, {"stream": {"tasks": list(tasks)}})
    return method, method.attach(tiny_llama())


def train(method, model, steps, low=1, high=64, start=1):
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(start, start + steps):
        model(**lm_batch(step, low, high)).loss.backward()
        optimiser.step()
        method.after_optimizer_step(model, step)
        optimiser.zero_grad()


def eval_logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_attach_adapts_the_square_defaults_and_trains_only_the_bank():
    method, model = attached()
    wrapped = [n for n, m in model.named_modules() if isinstance(m, HimalayaLinear)]
    assert wrapped == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "o_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(f"{BANK_NAME}.") for n in trainable)  # no head on a causal LM
    assert f"{BANK_NAME}.core" not in trainable
    stats = method.stats
    assert (stats["rank_rule"], stats["rank_min"], stats["rank_max"], stats["controller_params"]) == ("config", 1, 1, 0)
    assert stats["adapter_params"] == stats["router_params"] + stats["elastic_params"] == stats["trainable_params"]


def test_router_size_at_the_seed_width():
    """About 45k router parameters at d = 576 with the default 40 atoms (SmolLM-135M's width)."""
    from wattpeft.methods.himalaya.layer import Router

    router = Router(576, 40, Method({}, 5.0, "lm", 1).config.router_hidden, 1, 16)
    assert 40_000 <= sum(p.numel() for p in router.parameters()) <= 50_000


def test_a_non_square_target_is_refused_by_name():
    method = Method({**SMALL, "target_modules": ["q_proj", "gate_proj"]}, 5.0, "lm", 10)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj is 32 -> 64, not square"):
        method.attach(tiny_llama())


@pytest.mark.parametrize("training", [True, False])
def test_every_token_gets_a_unit_rank_one_update(training):
    method, model = attached()
    model.train(training)
    module = model.get_submodule("model.layers.0.self_attn.q_proj")
    x = torch.randn(3, 7, D)
    torch.manual_seed(1)
    r, _ = method.bank.update_direction(x)
    torch.testing.assert_close(r.norm(dim=-1), torch.ones(3, 7), rtol=0, atol=1e-5)
    if not training:  # deterministic: the layer adds exactly r (r . x) / sqrt(d)
        with torch.no_grad():
            expected = module.base_layer(x) + r * (r * x).sum(-1, keepdim=True) / math.sqrt(D)
            torch.testing.assert_close(module(x), expected)


def test_gates_bound_expected_active_atoms_and_keep_three_at_inference():
    logits = 6 * torch.randn(64, 40)  # many near-certain gates: sum(sigmoid) far above 3
    for temperature in (1.0, 0.5):
        pi = gate_probabilities(logits, temperature, 3.0)
        assert float(pi.sum(-1).max()) <= 3.0 + 1e-5
    assert torch.equal(top_gates(pi, 3).sum(-1), torch.full((64,), 3.0))
    method, model = attached({"max_active_atoms": 3.0})
    model.eval()
    with torch.no_grad():
        logits, _ = method.bank.router(torch.randn(50, D), 0, method.bank.router_weights())
        pi = gate_probabilities(logits, method.bank.temperature, 3.0)
        assert float(pi.sum(-1).max()) <= 3.0 + 1e-5
        assert int((top_gates(pi, 3) > 0).sum(-1).max()) == 3


def test_quantiser_round_trip_within_its_bound_and_three_bits_packed():
    x = torch.randn(40, 576, generator=torch.Generator().manual_seed(0)) * torch.rand(40, 1) * 5
    for bits in (3, 8):
        codes, scales = quantise(x, bits)
        assert int(codes.min()) >= -(2 ** (bits - 1)) and int(codes.max()) <= 2 ** (bits - 1) - 1
        stored = store(x, bits)
        assert stored["codes"].dtype == torch.uint8 and stored["codes"].numel() == math.ceil(x.numel() * bits / 8)
        assert torch.equal(unpack_codes(stored["codes"], bits, x.numel()), codes.flatten())
        error = (x - restore(stored, bits, tuple(x.shape))).abs()
        assert bool((error <= roundtrip_bound(x, bits)).all())
        assert float(error.max()) > 0.4 * float(scales.min())  # the bound is not loose by much
    # Codes -4, 3, 0 -> unsigned 0, 7, 4, three bits each, least significant first: 9 bits, 2 bytes.
    assert pack_codes(torch.tensor([-4, 3, 0], dtype=torch.int16), 3).tolist() == [0b00111000, 0b1]


def test_growth_keeps_the_atom_count_and_never_touches_the_core():
    method, model = attached({"tau": 1.0, "growth_window": 2, "growth_sample_tokens": 8})
    bank = model.get_submodule(BANK_NAME)
    core = bank.core.clone()
    shape = bank.elastic.shape
    train(method, model, 7)
    assert method.growth_events == 3 == method.stats["growth_events"]  # after steps 2, 4 and 6
    assert bank.elastic.shape == shape and bank.n_atoms == 12
    assert torch.equal(bank.core, core)
    assert method.continual_fields(model)["atoms"] == 12.0


def test_growth_promotes_the_residual_direction_into_the_least_used_slot():
    method, model = attached({"tau": 1.0, "growth_window": 1})
    bank = method.bank
    direction = torch.zeros(D)
    direction[5] = 1.0
    method.ring[:3] = direction * torch.tensor([[1.0], [-2.0], [0.5]])
    method.ring_count = 3
    method.usage = torch.tensor([0.3, 0.1, 0.05, 0.2])
    method._grow()
    torch.testing.assert_close(bank.elastic[2].detach().abs(), direction)
    assert float(bank.router.out.weight.detach()[bank.n_atoms + 8 + 2].abs().sum()) == 0  # starts adding nothing
    assert method.ring_count == 0 and method.history == []


def evict_slot_change(method, model, batch, consolidate):
    """How far the logits move when elastic atom 0 is evicted, with or without consolidation."""
    method, model = copy.deepcopy((method, model))
    method.bank = model.get_submodule(BANK_NAME)
    before = eval_logits(model, batch)
    if consolidate:
        assert method.consolidate(0) > 0
    method.evict(0, torch.randn(D))
    return float((eval_logits(model, batch) - before).norm())


def test_consolidation_moves_the_evicted_atom_into_the_core():
    # Every atom on at inference, so that the core can carry what the evicted atom carried, and
    # a core spanning most of the width (24 of 32), so that most of the atom lies in its span.
    method, model = attached({"core_atoms": 24, "max_active_atoms": 28.0, "growth_window": 10_000})
    train(method, model, 6)
    for key in ("router.out.weight", "router.out.bias", "elastic"):
        assert key in method.fisher.value  # the gradient-only Fisher was kept
    batch = lm_batch(99)
    without = evict_slot_change(method, model, batch, consolidate=False)
    with_it = evict_slot_change(method, model, batch, consolidate=True)
    assert with_it < 0.8 * without  # lam ~ 0.7 here: most of what the core can hold moves


def test_consolidation_is_data_free_and_weighted_by_fisher():
    method, model = attached()
    n, out = method.bank.n_atoms, method.bank.router.out
    before = out.weight.detach().clone()
    assert method.consolidate(1) == 0.0  # no gradient seen yet: no importance, nothing moves
    assert torch.equal(out.weight, before)
    method.fisher.value = {"router.out.weight": torch.zeros_like(out.weight)}
    method.fisher.value["router.out.weight"][n + 8 + 1] = 1.0  # elastic atom 1's coefficient row
    method.fisher.value["router.out.weight"][n: n + 8] = 1.0 / 3  # each core coefficient row
    lam = method.consolidate(1)
    assert lam == pytest.approx(16 / (16 + 16 / 3))
    assert not torch.equal(out.weight[n: n + 8], before[n: n + 8])
    assert torch.equal(out.weight[:n], before[:n])  # gate rows untouched


def test_adapter_norm_stays_bounded_over_a_three_task_stream():
    tasks = ("a", "b", "c")
    method, model = attached({"tau": 1.0, "growth_window": 3}, tasks=tasks)
    bound = math.sqrt(4 / D)  # 4 adapted modules, each ||r r^T||_F / sqrt(d) = 1 / sqrt(d)
    for index in range(3):
        method.begin_task(model, index)
        train(method, model, 4, low=1 + 20 * index, high=21 + 20 * index, start=1 + 4 * index)
        method.end_task(model, index, [])
        norm = method.adapter_norm(model)
        assert 0.99 * bound <= norm <= bound + 1e-6
    assert method.growth_events >= 2
    fields = method.continual_fields(model)
    assert fields["max_core_atom_norm"] == pytest.approx(1.0)
    batch = lm_batch(5)
    method.set_task(model, 0)
    first = eval_logits(model, batch)
    method.set_task(model, 2)
    assert not torch.allclose(first, eval_logits(model, batch))  # the task embedding routes


def test_save_load_harden_reproduces_the_eval_outputs(tmp_path):
    method, model = attached({"growth_window": 3, "tau": 1.0}, tasks=("a", "b"))
    method.begin_task(model, 1)
    train(method, model, 5)
    batch = lm_batch(42)
    expected = eval_logits(model, batch)
    method.save(model, tmp_path / "adapter")
    loader = Method(SMALL, 5.0, "lm", 1, {"stream": {"tasks": ["a", "b"]}})
    hardened = loader.harden(loader.load(tiny_llama(), tmp_path / "adapter"))
    loader.set_task(hardened, 1)
    assert not any(p.requires_grad for p in hardened.parameters())
    # The trained model computed with the stored (quantised) values already: equal, not close.
    torch.testing.assert_close(eval_logits(hardened, batch), expected, rtol=0, atol=1e-5)
    # The stored bytes: 3 bits per dictionary entry, 8 per router weight, float32 scales per row.
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "adapter" / ADAPTER_TENSORS))
    assert tensors["core.codes"].numel() == math.ceil(8 * D * 3 / 8)
    assert tensors["elastic.codes"].numel() == math.ceil(4 * D * 3 / 8)
    weight = hardened.get_submodule(BANK_NAME).router.hidden.weight
    assert tensors["router.hidden.weight.codes"].numel() == weight.numel()
    assert tensors["router.hidden.weight.scales"].numel() == weight.shape[0]


def test_state_round_trips_on_a_causal_lm():
    method, model = attached({"growth_window": 3, "tau": 1.0})
    train(method, model, 4)
    state = method.state_dict(model)
    fresh, fresh_model = attached({"growth_window": 3, "tau": 1.0})
    fresh.load_state_dict(fresh_model, state)
    assert fresh.state_dict(fresh_model)["ring_count"] == state["ring_count"] > 0
    assert fresh.fisher.value.keys() == method.fisher.value.keys()
    assert fresh.bank.temperature == method.bank.temperature < 1.0
    assert torch.equal(fresh.bank.generator.get_state(), method.bank.generator.get_state())
