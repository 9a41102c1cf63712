"""Spectral adapters (BHSP, TABS, HEST and its ablations; methods/spectral.py and
spectral_method.py): SVD start, gates, controllers, the energy cost and its dual ascent,
hardening (argmax gates, off skipped, int8 GEMMs, the energy cap), save/load and export."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import tiny_bert
from wattpeft.energy.table import DEFAULT_J_PER_FLOP, default_table, state_j_per_flop
from wattpeft.methods import METHODS, entry, get_method, load_export, method_config, method_names
from wattpeft.methods.base import count_params
from wattpeft.methods.spectral import (
    GATES_NAME, GateSet, HardenedSpectralLinear, SpectralLinear, direction_flops, int8_matmul, quantise_rows,
)
from wattpeft.methods.spectral_method import SpectralMethod

SPECTRAL = [n for n in method_names() if issubclass(get_method(n), SpectralMethod)]
TOKEN_WISE = [n for n in SPECTRAL if get_method(n).token_wise]
DUAL = [n for n in SPECTRAL if getattr(get_method(n), "dual_ascent", False)]
STATES = {
    "bhsp": ("off", "fp16"), "tabs": ("off", "fp16"), "hest_fp16": ("off", "fp16"),
    "hest": ("off", "int8", "fp16"), "hest_soft": ("off", "int8", "fp16"), "hest_unfactorised": ("off", "int8", "fp16"),
}
RANK, K = 4, 4
TARGETS = ["q_proj", "v_proj"]
HIDDEN = 32


def llama_config(layers=2, hidden=HIDDEN, heads=4, kv_heads=2, positions=256):
    return LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=positions)


def tiny_llama(layers=2, **kwargs):
    torch.manual_seed(0)
    return LlamaForCausalLM(llama_config(layers, **kwargs)).eval()


def full_on_j_per_token(layers=2):
    """Modelled energy of one token with every direction of q_proj and v_proj in 16-bit."""
    flops = layers * RANK * (direction_flops(HIDDEN, HIDDEN) + direction_flops(HIDDEN, HIDDEN // 2))
    return flops * DEFAULT_J_PER_FLOP["16bit"]


def reference_inputs(name, j_per_sample=1e-8):
    """inputs for `name`: a train summary of each run its registry entry waits for."""
    return {"runs": {m: {"validation": {"modelled_adapter_j_per_sample": j_per_sample}} for m in entry(name).after}}


def spectral(name, inputs=None, rank=RANK, **params):
    params = {"rank": rank, "target_modules": TARGETS, **params}
    if "controller_dim" in method_config(name).field_names():
        params.setdefault("controller_dim", K)
    return get_method(name)(params, 1.0, "summarisation", 10, reference_inputs(name) if inputs is None else inputs)


def batch(t=10, b=2, pad=3, seed=0):
    """Token ids and an attention mask whose last row ends in `pad` padding tokens."""
    ids = torch.randint(0, 64, (b, t), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    if pad:
        mask[-1, t - pad:] = 0
    return ids, mask


def logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def perturb(method, scale=0.1, controller_scale=0.0, seed=1):
    """As training would leave it: nonzero du, dv (and, optionally, a controller moved off
    its start, so that directions take different states)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in method.modules.values():
            module.du.copy_(scale * torch.randn(module.du.shape, generator=gen))
            module.dv.copy_(scale * torch.randn(module.dv.shape, generator=gen))
        if controller_scale:
            for param in method.gates.controller.parameters():
                param.copy_(controller_scale * torch.randn(param.shape, generator=gen))


def controller_grads(method):
    return {n: p.grad for n, p in method.gates.controller.named_parameters()}


# ---------------------------------------------------------------- the start: the base model, from its SVD


@pytest.mark.parametrize("name", SPECTRAL)
def test_at_step_zero_the_adapted_model_is_the_base_model(name):
    ids, mask = batch()
    expected = logits(tiny_llama(), ids, mask)
    method = spectral(name)
    model = method.attach(tiny_llama())
    assert isinstance(model.model.layers[0].self_attn.q_proj, SpectralLinear)
    model.eval()
    torch.testing.assert_close(logits(model, ids, mask), expected, rtol=0, atol=1e-5)
    model.train()  # Gumbel samples: any gate mix, still the base model
    torch.testing.assert_close(logits(model, ids, mask), expected, rtol=0, atol=1e-5)


def test_directions_are_the_top_singular_directions_and_the_update_is_their_change():
    method = spectral("tabs")
    model = method.attach(tiny_llama())
    base = tiny_llama()
    module = method.modules["model.layers.1.self_attn.v_proj"]
    u_ref, s_ref, vh_ref = torch.linalg.svd(base.model.layers[1].self_attn.v_proj.weight.detach())
    torch.testing.assert_close(module.s, s_ref[:RANK])
    # Unit singular vectors, equal up to sign: |<u_i, u_ref_i>| = 1.
    torch.testing.assert_close((module.u * u_ref[:, :RANK]).sum(0).abs(), torch.ones(RANK))
    torch.testing.assert_close((module.v * vh_ref[:RANK].T).sum(0).abs(), torch.ones(RANK))

    perturb(method, scale=0.3)
    u, s, v, du, dv = module.u, module.s, module.v, module.du.detach(), module.dv.detach()
    x = torch.randn(3, 7, module.in_features)
    on = (torch.rand(3, 7, RANK) > 0.4).float()
    # sum over directions that are on of (u_i + du_i) s_i (v_i + dv_i)^T x - u_i s_i v_i^T x
    per_direction = (torch.einsum("oi,i,ni->ion", u + du, s, v + dv) - torch.einsum("oi,i,ni->ion", u, s, v))
    explicit = torch.einsum("btd,iod,bti->bto", x, per_direction, on)
    with torch.no_grad():
        torch.testing.assert_close(module.update(x, on), explicit, rtol=1e-4, atol=1e-5)
        right, left = module.factors()
        torch.testing.assert_close(left @ right, per_direction.sum(0), rtol=1e-4, atol=1e-5)
        # The whole layer with every gate on: the base layer plus the explicit sum.
        model.eval()
        method.gates.controller.proj[module.index].bias.fill_(50.0)
        all_on = torch.einsum("btd,od->bto", x, per_direction.sum(0))
        torch.testing.assert_close(module(x), base.model.layers[1].self_attn.v_proj(x) + all_on, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- gates and controllers


@pytest.mark.parametrize("name", SPECTRAL)
def test_gate_shapes_and_states(name):
    method = spectral(name)
    model = method.attach(tiny_llama())
    gates = getattr(model, GATES_NAME)
    assert gates.states == STATES[name] and method.stats["gate_states"] == list(STATES[name])
    x = torch.randn(2, 5, HIDDEN)
    for module in method.modules.values():
        model.train()
        probs = gates.probs(x, module)
        assert probs.shape == (2, 5, RANK, len(STATES[name]))
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5, RANK))
        assert ((probs > 0) & (probs < 1)).all()  # relaxed samples in training
        model.eval()
        hard = gates.probs(x, module)
        assert hard.shape == probs.shape and set(hard.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(hard.sum(-1), torch.ones(2, 5, RANK))


def test_every_spectral_method_has_its_gate_states():
    assert set(SPECTRAL) == set(STATES), "a new spectral method: add its gate states to STATES"


@pytest.mark.parametrize("name", SPECTRAL)
def test_gradients_reach_the_controller(name):
    method = spectral(name)
    model = method.attach(tiny_llama())
    perturb(method, scale=0.2)  # the task loss depends on the gates once du, dv are not 0
    ids, mask = batch()
    model.train()
    torch.manual_seed(0)
    task = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    extra = method.extra_loss(model, 0)
    assert extra is not None and extra.requires_grad
    task.backward(retain_graph=True)
    for param_name, grad in controller_grads(method).items():
        assert grad is not None and grad.abs().sum() > 0, f"task loss: no gradient on controller {param_name}"
    model.zero_grad()
    (task + extra).backward()
    for param_name, grad in controller_grads(method).items():
        assert grad is not None and grad.abs().sum() > 0, f"no gradient on controller {param_name}"


@pytest.mark.parametrize("name", TOKEN_WISE)
def test_each_direction_has_its_own_gate(name):
    """The seed broadcast one controller score to all R directions of a layer."""
    method = spectral(name)
    method.attach(tiny_llama()).train()
    x = torch.randn(2, 6, HIDDEN)
    for module in method.modules.values():
        with torch.no_grad():
            gate_logits = method.gates.logits(x, module)  # (2, 6, R, states)
        spread = (gate_logits - gate_logits[..., :1, :]).abs().amax(dim=(-1, -2))
        assert (spread > 1e-3).all(), "directions share one gate"
        # ... and the token decides: different tokens, different logits.
        assert (gate_logits[0, 0] - gate_logits[0, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", SPECTRAL)
def test_gumbel_temperature_comes_from_the_config(name, monkeypatch):
    taus = []
    gumbel = F.gumbel_softmax

    def spy(logits, tau=1.0, **kwargs):
        taus.append(tau)
        return gumbel(logits, tau=tau, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax", spy)
    method = spectral(name, gumbel_tau=0.37)
    model = method.attach(tiny_llama())
    assert method.gates.tau == 0.37
    ids, mask = batch()
    model.train()
    model(input_ids=ids, attention_mask=mask)
    assert taus == [0.37] * len(method.modules)
    model.eval()
    model(input_ids=ids, attention_mask=mask)
    assert len(taus) == len(method.modules)  # argmax gates outside training: no sampling


def test_controller_sizes():
    """HEST's factorised controller: sum over input widths of d k, plus L k, plus (k + 1) R
    x 2 on-states: O((d + L) k). TABS's: per module in x R + R: O(L R d). At SmolLM2-135M's
    width (576) on q_proj and v_proj with R = k = 8, HEST's is under 10% of TABS's."""
    d, rank, k = 576, 8, 8

    def hest_count(widths, layers, max_rank, n_on=2):
        return sum(w * k for w in set(widths)) + layers * k + (k + 1) * max_rank * n_on

    def tabs_count(widths, ranks, n_on=1):
        return sum(w * r * n_on + r * n_on for w, r in zip(widths, ranks))

    counts = {}
    for name in ("hest", "tabs", "hest_unfactorised"):
        method = spectral(name, rank=rank, controller_dim=k) if name == "hest" else spectral(name, rank=rank)
        model = method.attach(tiny_llama(layers=3, hidden=d, heads=9, kv_heads=3))
        counts[name] = method.stats["controller_params"]
        assert counts[name] == count_params(getattr(model, GATES_NAME).controller)
    widths = [d] * 6
    assert counts["hest"] == hest_count(widths, 3, rank)
    assert counts["tabs"] == tabs_count(widths, [rank] * 6)
    assert counts["hest_unfactorised"] == tabs_count(widths, [rank] * 6, n_on=2)
    # SmolLM2-135M: 30 layers, 60 target modules.
    assert hest_count([d] * 60, 30, rank) < 0.1 * tabs_count([d] * 60, [rank] * 60)

    # Distinct input widths (BERT's default targets read 32 and 64 wide inputs), per-module ranks.
    method = get_method("hest")({"controller_dim": k}, 5.0, "classification", 1, reference_inputs("hest"))
    method.attach(tiny_bert())
    modules = list(method.modules.values())
    assert {m.in_features for m in modules} == {32, 64}
    assert method.stats["controller_params"] == hest_count([m.in_features for m in modules], 2,
                                                           max(m.rank for m in modules))


@pytest.mark.parametrize("name", TOKEN_WISE)
def test_padding_costs_nothing(name):
    """Expected energy and FLOPs per sequence count real tokens only."""
    method = spectral(name)
    model = method.attach(tiny_llama()).eval()
    perturb(method, scale=0.2, controller_scale=1.0)
    gates = getattr(model, GATES_NAME)
    ids, mask = batch(t=12, pad=5)
    logits(model, ids, mask)
    padded = {key: getattr(gates, key).clone() for key in ("energy", "flops", "full_flops", "tokens")}
    logits(model, ids[1:, :7], mask[1:, :7])
    for key, value in padded.items():
        torch.testing.assert_close(getattr(gates, key), value[1:], rtol=1e-5, atol=0, msg=key)
    assert padded["tokens"].tolist() == [12.0, 7.0]
    assert padded["full_flops"][1] == 7 * method.stats["adapter_flops_per_token_max"]


# ---------------------------------------------------------------- HEST's energy cost


@pytest.mark.parametrize("name", [n for n in SPECTRAL if entry(n).after])
@pytest.mark.parametrize("over", [True, False])
def test_one_dual_ascent_step(name, over):
    """lambda <- max(0, lambda + alpha mean((E - E_max) / E_max)): up when over the budget,
    down to 0 (clamped) when far under; the soft-penalty ablation keeps lambda fixed."""
    params = {"energy_lambda": 0.1, "energy_ratio": 0.6}
    if name in DUAL:
        params["dual_lr"] = 0.5
    reference = 1e-3 * full_on_j_per_token() if over else 1e3 * full_on_j_per_token()
    method = spectral(name, reference_inputs(name, reference), **params)
    model = method.attach(tiny_llama()).train()
    e_max = 0.6 * reference
    assert method.e_max() == pytest.approx(e_max) and method.lam == 0.1
    ids, mask = batch()
    model(input_ids=ids, attention_mask=mask)
    loss = method.extra_loss(model, 0)
    energy = method.gates.energy.detach()
    violation = float(((energy - e_max) / e_max).mean())
    assert float(loss) == pytest.approx(0.1 * violation, rel=1e-5)
    method.after_optimizer_step(model, 1)
    if name not in DUAL:
        assert method.lam == 0.1
    elif over:
        assert method.lam == pytest.approx(0.1 + 0.5 * violation, rel=1e-5) and method.lam > 0.1
    else:
        assert violation < -0.2 / 0.5 and method.lam == 0.0
    assert method.log_fields()["lambda"] == method.lam


@pytest.mark.parametrize("name", [n for n in SPECTRAL if entry(n).after])
def test_hest_without_its_reference_run_says_so(name):
    (reference,) = entry(name).after
    with pytest.raises(ValueError, match=rf"no {reference} run was given"):
        spectral(name, inputs={}).attach(tiny_llama())
    with pytest.raises(ValueError, match=rf"{reference}'s train summary has no positive validation\.modelled_adapter"):
        spectral(name, inputs={"runs": {reference: {"validation": {"eval_loss": 1.0}}}}).attach(tiny_llama())


# ---------------------------------------------------------------- hardening


class Rule(nn.Module):
    """A controller whose logits (..., R, on-states) come from a function of the input."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def logits(self, x, module):
        return self.fn(x)


def state_logits(codes, n_on):
    """Logits (R, n_on) that put direction i in state codes[i] (0 off, 1.. the on-states)."""
    out = torch.full((len(codes), n_on), -20.0)
    for i, code in enumerate(codes):
        if code:
            out[i, code - 1] = 20.0
    return out


def gated_layer(states, fn, in_features=40, out_features=24, seed=0):
    """(trained SpectralLinear, its HardenedSpectralLinear) of one random layer, gates set by `fn`."""
    torch.manual_seed(seed)
    base = nn.Linear(in_features, out_features)
    gates = GateSet(states, 0.67, state_j_per_flop(default_table(), states), n_layers=1)
    layer = SpectralLinear(base, RANK, 0, 0, gates)
    gates.controller = Rule(fn)
    gates.set_cap_shares([layer])
    with torch.no_grad():
        layer.du.normal_(0, 0.3)
        layer.dv.normal_(0, 0.3)
    gates.eval()
    return layer, HardenedSpectralLinear.from_trained(layer)


def update_error(states, codes, x, seed=0):
    """||hardened - trained|| / ||trained update|| with every token's directions in `codes`."""
    fixed = state_logits(codes, len(states) - 1)
    layer, hard = gated_layer(states, lambda x: fixed.expand(*x.shape[:-1], -1, -1), seed=seed)
    with torch.no_grad():
        soft, base = layer(x), layer.base_layer(x)
        return float((hard(x) - soft).norm() / (soft - base).norm())


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_and_16bit_directions_match_the_trained_layer(seed):
    """Per-channel int8 weights and per-token int8 activations: about 1% of the update; the
    16-bit path (bf16 on a CPU) is tighter, under half a percent."""
    x = torch.randn(3, 9, 40)
    three = ("off", "int8", "fp16")
    int8, half = update_error(three, [1] * RANK, x, seed), update_error(three, [2] * RANK, x, seed)
    assert 0 < int8 < 0.02 and 0 < half < 0.008
    assert half < int8 / 1.5  # the 16-bit path is the tighter one
    assert update_error(("off", "fp16"), [1] * RANK, x, seed) == pytest.approx(half)  # hest_fp16, tabs
    assert update_error(three, [1, 0, 2, 1], x, seed) < 0.02


def test_off_directions_are_skipped(monkeypatch):
    calls = {"int8": 0, "16bit": []}
    int8 = int8_matmul
    half = HardenedSpectralLinear._16bit

    def count_int8(a, b, cuda_rules=None):
        calls["int8"] += 1
        return int8(a, b, cuda_rules)

    def count_16bit(self, x, cols, mask):
        calls["16bit"].append(cols.tolist())
        return half(self, x, cols, mask)

    monkeypatch.setattr("wattpeft.methods.spectral.int8_matmul", count_int8)
    monkeypatch.setattr(HardenedSpectralLinear, "_16bit", count_16bit)
    three = ("off", "int8", "fp16")
    x = torch.randn(2, 7, 40)

    def run(fn):
        calls["int8"], calls["16bit"] = 0, []
        layer, hard = gated_layer(three, fn)
        with torch.no_grad():
            return hard(x), layer.base_layer(x), layer(x)

    fixed = lambda codes: lambda x: state_logits(codes, 2).expand(*x.shape[:-1], -1, -1)  # noqa: E731
    got, base, _ = run(fixed([0] * RANK))
    assert torch.equal(got, base) and calls == {"int8": 0, "16bit": []}
    run(fixed([2, 0, 2, 0]))  # 16-bit only: no int8 GEMM; off directions 1 and 3 not computed
    assert calls == {"int8": 0, "16bit": [[0, 2, RANK + 0, RANK + 2]]}
    run(fixed([1, 1, 0, 0]))
    assert calls == {"int8": 2, "16bit": []}  # x -> z and z -> y

    # Per token: tokens whose directions are all off get exactly the base layer's output.
    on_token = lambda x: torch.where((x[..., :1] > 0)[..., None], state_logits([2, 1, 2, 1], 2),  # noqa: E731
                                     state_logits([0] * RANK, 2))
    got, base, soft = run(on_token)
    off = x[..., 0] <= 0
    assert off.any() and (~off).any()
    assert torch.equal(got[off], base[off])
    assert not torch.equal(got[~off], base[~off])
    torch.testing.assert_close(got, soft, rtol=0, atol=0.05 * float((soft - base).abs().max()))


@pytest.mark.parametrize("name", TOKEN_WISE)
def test_hardened_model_matches_the_trained_one_with_argmax_gates(name):
    method = spectral(name)
    model = method.attach(tiny_llama())
    perturb(method, scale=0.2)
    # Gates that differ between directions and states but are far from ties, so that the
    # hardened model's rounding (which reaches the next layers' controller inputs) flips none.
    n_states = len(STATES[name])
    with torch.no_grad():
        for j, (param_name, param) in enumerate(method.gates.controller.named_parameters()):
            if param_name.split(".")[-1] == "bias":  # direction i in state (i + j) mod n_states
                codes = [(i + j) % n_states for i in range(RANK)]
                param.copy_(0.15 * state_logits(codes, n_states - 1).flatten())
            else:
                param.mul_(0.05)
    ids, mask = batch(t=12, pad=4)
    base = logits(tiny_llama(), ids, mask)
    model.eval()
    soft = logits(model, ids, mask)
    used = method.gates.utilisation()
    assert all(max(shares) > 0 for shares in used.values()), f"not every state is used: {used}"
    hardened = method.harden(model)
    getattr(hardened, GATES_NAME).e_max = None  # the cap drops directions on purpose (next test)
    assert all(isinstance(m, HardenedSpectralLinear) for n, m in hardened.named_modules() if n in method.modules)
    got = logits(hardened, ids, mask)
    real = mask.bool()  # padding positions' own outputs are not compared (their gates are off when hardened)
    scale = float((soft - base)[real].abs().max())
    assert scale > 1e-2
    error = float((got - soft)[real].abs().max()) / scale
    assert error < (0.03 if "int8" in STATES[name] else 0.01)  # 16-bit only: tighter (about 0.5%)


def test_the_energy_cap_holds_per_sequence_on_long_inputs():
    per_token = full_on_j_per_token()
    method = spectral("hest", reference_inputs("hest", 8 * per_token), energy_ratio=0.6)
    model = method.attach(tiny_llama())
    perturb(method, scale=0.2, controller_scale=0.5)
    hardened = method.harden(model)
    gates = getattr(hardened, GATES_NAME)
    e_max = 0.6 * 8 * per_token
    assert gates.e_max == pytest.approx(e_max)
    ids, mask = batch(t=160, pad=100)
    logits(hardened, ids, mask)
    capped = gates.last_energy
    assert capped.shape == (2,) and (capped > 0).all()
    assert (capped <= e_max * (1 + 1e-5)).all(), (capped, e_max)
    gates.e_max = None
    logits(hardened, ids, mask)
    uncapped = gates.last_energy
    assert uncapped[0] > 2 * e_max  # without the cap the long input goes well over: not vacuous
    assert (capped <= uncapped * (1 + 1e-6)).all()
    # Padding costs nothing: the padded row's energy is that of its 60 real tokens alone.
    logits(hardened, ids[1:, :60], mask[1:, :60])
    torch.testing.assert_close(gates.last_energy, uncapped[1:], rtol=1e-4, atol=0)


def test_bhsp_hardens_to_a_plain_model():
    method = spectral("bhsp")
    model = method.attach(tiny_llama())
    perturb(method, scale=0.2, controller_scale=2.0)
    ids, mask = batch()
    model.eval()
    soft = logits(model, ids, mask)
    assert float((soft - logits(tiny_llama(), ids, mask)).abs().max()) > 1e-2
    hardened = method.harden(model)
    assert not hasattr(hardened, GATES_NAME)
    assert not any(isinstance(m, (SpectralLinear, HardenedSpectralLinear, GateSet)) for m in hardened.modules())
    assert not hardened._forward_hooks and not hardened._forward_pre_hooks
    assert type(hardened.model.layers[0].self_attn.q_proj) is nn.Linear
    kept = method.stats["kept_directions"]
    assert 0 < sum(kept.values()) < RANK * len(kept)  # some directions merged, some dropped
    torch.testing.assert_close(logits(hardened, ids, mask), soft, rtol=0, atol=1e-5)
    assert count_params(hardened) == count_params(tiny_llama())


# ---------------------------------------------------------------- int8 GEMM and quantisation


@pytest.mark.parametrize("m", [1, 5, 16, 17])
@pytest.mark.parametrize(("k", "n"), [(13, 7), (24, 8), (9, 30)])
def test_int8_matmul_pads_to_the_cuda_rules_without_changing_the_result(m, k, n, monkeypatch):
    gen = torch.Generator().manual_seed(m * 100 + k)
    a = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (k, n), generator=gen, dtype=torch.int8)
    expected = (a.long() @ b.long()).int()
    assert torch.equal(int8_matmul(a, b, cuda_rules=False), expected)
    shapes = []
    int_mm = torch._int_mm

    def spy(x, y):
        shapes.append((tuple(x.shape), tuple(y.shape)))
        return int_mm(x, y)

    monkeypatch.setattr(torch, "_int_mm", spy)
    got = int8_matmul(a, b, cuda_rules=True)
    assert got.dtype == torch.int32 and torch.equal(got, expected)
    ((pm, pk), (pk2, pn)), = shapes
    assert pm > 16 and pk % 8 == 0 and pn % 8 == 0 and pk == pk2


def test_quantise_rows_round_trip():
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(6, 37, generator=gen) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 300.0, 0.0])[:, None]
    q, scale = quantise_rows(t)
    assert q.dtype == torch.int8 and scale.shape == (6,) and q.abs().max() <= 127
    assert (q.abs().amax(-1)[:5] == 127).all()  # each row uses the full range
    error = (q.float() * scale[:, None] - t).abs()
    assert (error <= scale[:, None] / 2 * (1 + 1e-5) + 1e-12).all()
    assert (q[5] == 0).all() and error[5].max() == 0


# ---------------------------------------------------------------- save, load and export


@pytest.mark.parametrize("name", SPECTRAL)
def test_save_load_and_export_keep_each_module_its_own_controller(tmp_path, name):
    """Eleven layers: sorted names put layers.10 before layers.2, so a layout read back in
    sorted order would hand each module another module's gate parameters."""
    method = spectral(name)
    model = method.attach(tiny_llama(layers=11))
    perturb(method, scale=0.2, controller_scale=1.0)
    ids, mask = batch(pad=0)
    model.eval()
    expected = logits(model, ids, mask)
    method.save(model, tmp_path / "adapter")
    loader = spectral(name, inputs={})
    loaded = loader.load(tiny_llama(layers=11), tmp_path / "adapter")
    assert [m.index for m in loader.modules.values()] == list(range(len(loader.modules)))
    torch.testing.assert_close(logits(loaded.eval(), ids, mask), expected, rtol=0, atol=1e-6)

    hardened = loader.harden(loaded)  # HEST's: with the cap it trained with (saved with the adapter)
    gates = getattr(hardened, GATES_NAME, None)  # none left once BHSP's gates are merged
    if entry(name).after:
        assert gates.e_max == pytest.approx(method.e_max())
    hard = logits(hardened, ids, mask)
    (tmp_path / "export").mkdir()
    loader.export(hardened, tmp_path / "export")
    (tmp_path / "export" / "export.json").write_text(json.dumps({"method": name}))
    reloaded = load_export(tmp_path / "export", "summarisation", None)
    torch.testing.assert_close(logits(reloaded, ids, mask), hard, rtol=0, atol=1e-6)
    if gates is not None:
        assert getattr(reloaded, GATES_NAME).e_max == gates.e_max
    else:
        assert not hasattr(reloaded, GATES_NAME)


# ---------------------------------------------------------------- the registry


def test_registry_entries_that_wait_for_a_run_name_it_as_their_energy_reference():
    waiting = [name for name, e in METHODS.items() if e.after]
    assert waiting
    for name in waiting:
        assert get_method(name).energy_reference in entry(name).after


def test_reading_the_registry_imports_no_torch():
    code = (
        "import sys; from wattpeft.methods import METHODS, entry, method_names; "
        "[(entry(n).after, entry(n).needs) for n in method_names()]; "
        "assert 'torch' not in sys.modules and 'peft' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
