"""LoRA-EWC and LILAC (methods/lora_ewc, methods/lilac) and their shared EWC (methods/ewc.py),
on a tiny grouped-query Llama (k/v projections non-square) with causal-LM batches."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import run_cfg
from wattpeft.data.loading import make_collator
from wattpeft.methods import get_method
from wattpeft.methods.ewc import EWC, per_sample_fisher
from wattpeft.methods.fw_lora.model import ADAPTER, lora_modules
from wattpeft.methods.lilac.layer import DICTS_NAME, dequantise, quantise, round_trip_bound
from wattpeft.training.trainer import Trainer, plan_schedule

lm_collate = make_collator("lm", pad_id=0)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    ))


def lm_rows(n=16, seed=0, length=10):
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 64, (length,), generator=gen).tolist()} for _ in range(n)]


def one_row_batches(rows):
    return [lm_collate([row]) for row in rows]


def make(name, params=None, steps=8):
    params = {"rank": 2, "fisher_samples": 4, **(params or {})}
    return get_method(name)(params, 5.0, "lm", steps, {"stream": {"tasks": ["a", "b"]}})


def attached(name, params=None, seed=0):
    """`name` on the tiny Llama, its adapter moved off its zero start (seeded)."""
    method = make(name, params)
    model = method.attach(tiny_llama())
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in method.ewc_params(model).values():
            param.add_(0.05 * torch.randn_like(param))
    return method, model


def logits_of(model, batch):
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ---------------------------------------------------------------- EWC


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_as_parameters_move():
    torch.manual_seed(0)
    params = {"a": torch.nn.Parameter(torch.randn(3, 4)), "b": torch.nn.Parameter(torch.randn(5))}
    fisher = {name: torch.rand_like(p) for name, p in params.items()}
    ewc = EWC(strength=7.0)
    assert ewc.penalty(params) is None  # nothing consolidated yet
    ewc.consolidate(params, fisher)
    assert ewc.penalty(params).item() == 0.0
    step = {name: torch.randn_like(p) for name, p in params.items()}
    penalties = []
    for size in (0.1, 0.2, 0.4):
        moved = {name: (p + size * step[name]).detach() for name, p in params.items()}
        expected = 0.5 * 7.0 * sum((fisher[n] * (size * step[n]) ** 2).sum() for n in params)
        penalties.append(ewc.penalty(moved).item())
        assert penalties[-1] == pytest.approx(expected.item(), rel=1e-5)
    assert penalties[0] < penalties[1] < penalties[2]


def test_per_sample_fisher_is_the_mean_of_squared_row_gradients_not_the_squared_mean():
    method, model = attached("lora_ewc")
    params = method.ewc_params(model)
    rows = lm_rows(4)
    got = per_sample_fisher(model, params, one_row_batches(rows))
    model.eval()
    by_hand = {name: torch.zeros_like(p) for name, p in params.items()}
    for batch in one_row_batches(rows):
        grads = torch.autograd.grad(model(**batch).loss, list(params.values()))
        for name, grad in zip(params, grads):
            by_hand[name] += grad ** 2 / len(rows)
    # Avalanche's estimate: the square of the minibatch-mean loss's gradient (equal-length rows,
    # so the batch's token mean is the mean of the rows' losses).
    grads = torch.autograd.grad(model(**lm_collate(rows)).loss, list(params.values()))
    squared_mean = {name: grad ** 2 for name, grad in zip(params, grads)}
    for name in params:
        torch.testing.assert_close(got[name], by_hand[name], rtol=1e-4, atol=1e-10)
    total = sum(float(v.sum()) for v in got.values())
    assert sum(float(v.sum()) for v in squared_mean.values()) < 0.9 * total  # Jensen: strictly smaller here


@pytest.mark.parametrize("name", ["lora_ewc", "lilac"])
def test_ewc_penalty_reaches_the_training_loss_through_the_trainer(name):
    rows = lm_rows(16)
    cfg = run_cfg(max_steps=4, batch_size=4, gradient_accumulation_steps=1, log_every=1, checkpoint_every=100,
                  learning_rate=1e-2, warmup_ratio=0.0)
    method = make(name, {"ewc_lambda": 1e4}, steps=plan_schedule(len(rows), cfg["training"]).total_steps)
    model = method.attach(tiny_llama())
    method.begin_task(model, 0)
    first = Trainer(cfg, model, method, rows, lm_collate, progress=False).train()
    assert all(r["loss_ewc"] == 0.0 for r in first.log if "loss_task" in r)  # nothing consolidated yet
    method.end_task(model, 0, one_row_batches(rows))
    method.begin_task(model, 1)
    second = Trainer(cfg, model, method, lm_rows(16, seed=1), lm_collate, progress=False).train()
    records = [r for r in second.log if "loss_task" in r]
    assert records[0]["loss_ewc"] == 0.0  # the first step starts at the anchor
    assert records[-1]["loss_ewc"] > 0.0
    for record in records:
        assert record["loss"] == pytest.approx(record["loss_task"] + record["loss_ewc"], rel=1e-5)


# ---------------------------------------------------------------- LILAC's dictionaries and storage


def test_lilac_dictionaries_are_one_tensor_per_width_shared_by_all_modules():
    method = make("lilac", {"atoms": 8})
    model = method.attach(tiny_llama())
    dictionaries = {n: p for n, p in model.named_parameters() if n.startswith(DICTS_NAME)}
    assert {tuple(p.shape) for p in dictionaries.values()} == {(8, 16), (8, 32), (8, 64)}  # k/v out, hidden, mlp
    assert method.stats["dictionary_widths"] == [16, 32, 64]
    for module in method.modules.values():
        shared = module._dicts[0]
        width = module.base_layer.in_features
        assert shared.of(width) is model.get_submodule(DICTS_NAME).of(width)
    norms = torch.stack([p.norm(dim=1) for p in dictionaries.values() if p.shape[1] == 32])
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert method.adapter_norm(model) == 0.0  # E = 0: no update at the start
    # Every module of width 32 sends its gradient into the one 32-wide tensor.
    with torch.no_grad():
        for module in method.modules.values():
            module.lilac_E.normal_()
    model(**lm_collate(lm_rows(2))).loss.backward()
    assert model.get_submodule(DICTS_NAME).of(32).grad.abs().sum() > 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == method.stats["adapter_params"] == 8 * (16 + 32 + 64) + len(method.modules) * 2 * 2 * 8


def test_the_8bit_round_trip_stays_within_half_a_step():
    torch.manual_seed(0)
    t = torch.randn(6, 50) * torch.logspace(-4, 2, 6)[:, None]
    t[2] = 0.0
    q, scale = quantise(t)
    assert q.dtype == torch.int8 and scale.shape == (6,)
    error = (t - dequantise(q, scale)).abs()
    assert (error <= round_trip_bound(scale)[:, None] * (1 + 1e-5)).all()
    assert error[2].max() == 0.0
    again, _ = quantise(dequantise(q, scale))
    assert torch.equal(again, q)  # storing the stored values changes nothing


# ---------------------------------------------------------------- both methods


def materialised_norm(method, model):
    """sqrt(sum_m ||scaling B_m A_m||_F^2) with B A formed (the test's reference only)."""
    if method.name == "lilac":
        updates = [m.scaling * (lambda a, b: b @ a)(*m.factors()) for m in method.modules.values()]
    else:
        updates = [m.scaling[ADAPTER] * m.lora_B[ADAPTER].weight @ m.lora_A[ADAPTER].weight
                   for m in lora_modules(model).values()]
    return math.sqrt(sum(float(u.detach().double().pow(2).sum()) for u in updates))


@pytest.mark.parametrize("name", ["lora_ewc", "lilac"])
def test_adapter_norm_is_the_norm_of_the_materialised_update(name):
    method, model = attached(name)
    norm = method.adapter_norm(model)
    assert norm > 0
    assert norm == pytest.approx(materialised_norm(method, model), rel=1e-5)


@pytest.mark.parametrize("name", ["lora_ewc", "lilac"])
def test_save_load_and_harden_reproduce_the_eval_logits_and_the_ewc_state(tmp_path, name):
    method, model = attached(name)
    rows = lm_rows(6, seed=2)
    method.end_task(model, 0, one_row_batches(rows))
    batch = lm_collate(lm_rows(3, seed=3))
    trained = logits_of(model, batch)
    method.save(model, tmp_path / "adapter")
    stored = logits_of(model, batch)
    loader = make(name)
    hardened = loader.harden(loader.load(tiny_llama(), tmp_path / "adapter"))
    assert not any(p.requires_grad for p in hardened.parameters())
    torch.testing.assert_close(logits_of(hardened, batch), stored, rtol=0, atol=1e-5)
    # LILAC's model was already at its 8-bit values after end_task: saving moved nothing more.
    torch.testing.assert_close(stored, trained, rtol=0, atol=1e-6)
    for kind in ("fisher", "anchor"):
        saved, loaded = getattr(method.ewc, kind), getattr(loader.ewc, kind)
        assert saved.keys() == loaded.keys() and saved
        for key in saved:
            assert torch.equal(saved[key], loaded[key]), key
    if name == "lora_ewc":  # kept apart, not merged into the backbone
        assert lora_modules(hardened)


def test_lilac_rounds_to_its_8bit_storage_within_the_bound(tmp_path):
    method, model = attached("lilac")
    before = {n: p.detach().clone() for n, p in method.adapter_tensors().items()}
    method.save(model, tmp_path / "adapter")
    for name, p in method.adapter_tensors().items():
        _, scale = quantise(before[name])
        assert ((p - before[name]).abs() <= round_trip_bound(scale)[:, None] * (1 + 1e-5)).all(), name
    stored = sum(f.stat().st_size for f in (tmp_path / "adapter").iterdir() if f.name.startswith("lilac_adapter"))
    floats = 4 * sum(t.numel() for t in before.values())
    assert stored < 0.5 * floats  # int8 plus a scale per row, not float32


@pytest.mark.parametrize("name", ["lora_ewc", "lilac"])
def test_state_dict_after_end_task_round_trips_fisher_anchor_and_task(tmp_path, name):
    method, model = attached(name)
    method.begin_task(model, 0)
    method.end_task(model, 0, one_row_batches(lm_rows(6)))
    method.begin_task(model, 1)
    torch.save(method.state_dict(model), tmp_path / "state.pt")
    with torch.no_grad():  # training on task 1 moves the adapter
        for param in method.ewc_params(model).values():
            param.add_(0.01)
    fresh = make(name)
    fresh_model = fresh.attach(tiny_llama())
    fresh_model.load_state_dict(model.state_dict())
    fresh.load_state_dict(fresh_model, torch.load(tmp_path / "state.pt", weights_only=False))
    assert fresh.current_task == 1 and fresh.ewc.fisher.keys() == method.ewc_params(model).keys()
    for kind in ("fisher", "anchor"):
        for key, value in getattr(method.ewc, kind).items():
            assert torch.equal(getattr(fresh.ewc, kind)[key], value), key
    expected = method.extra_loss(model, 0)
    assert expected > 0 and torch.equal(fresh.extra_loss(fresh_model, 0), expected)
