"""Spectral adapters (seeds 000/001): what BHSP, TABS, HEST and HEST's ablations share.

For each target weight W, a truncated SVD gives its top-R directions (u_i, s_i, v_i). The
adapter learns additive updates du_i, dv_i; direction i's contribution to a token x is

    (u_i + du_i) s_i (v_i + dv_i)^T x - u_i s_i v_i^T x  =  s_i [u_i (dv_i^T x) + du_i ((v_i + dv_i)^T x)],

zero while du = dv = 0 (the adapted model starts as the base model), and a gate that
switches direction i off leaves the pretrained behaviour. The right-hand form is what is
computed: its size follows the update, not W, so int8 rounding stays small beside it.

A gate puts each direction, per token, in one of the method's `states` ("off", "int8",
"fp16"; "fp16" is the device's 16-bit type, bf16 on a CPU). One `GateSet` per model holds
the method's controller (who scores the directions), the Gumbel-softmax temperature, the
modelled energy E_dir(i, state) = FLOPs of direction i x J/FLOP(state) (energy/table.py),
and the bookkeeping of expected energy and FLOPs per sequence. Hardening (`harden_model`)
fixes the gates by argmax: "off" directions are skipped, "int8" ones run through
`torch._int_mm` with per-channel int8 weights and per-token int8 activations, the rest in
the 16-bit type; an energy cap E_max, when set, holds per sequence by construction.

Methods differ in their controller and cost term only (methods/<name>/model.py).
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

OFF = 0  # index of the "off" state in every method's states
GATES_NAME = "spectral_gates"  # where the GateSet hangs in the model
ON_LOGIT_INIT = 2.0  # controllers start with every direction on (p(off) about 0.1)


def svd_directions(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U: out x R, S: R, V: in x R), the top-`rank` singular directions of `weight`, in float32.
    A full SVD: exact, and cheap beside training at these sizes."""
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    return u[:, :rank].contiguous(), s[:rank].contiguous(), vh[:rank].T.contiguous()


def layer_index(name: str) -> int:
    """The transformer block a module belongs to: the first number in its dotted name."""
    match = re.search(r"\.(\d+)\.", f".{name}.")
    return int(match.group(1)) if match else 0


def direction_flops(in_features: int, out_features: int) -> int:
    """FLOPs per token of one direction: two rank-1 terms, each in -> 1 -> out (2 FLOPs a MAC)."""
    return 4 * (in_features + out_features)


# ---------------------------------------------------------------- controllers


class StaticController(nn.Module):
    """BHSP: one logit per (target module, direction, on-state), the same for every token."""

    def __init__(self, ranks: Sequence[int], n_on: int):
        super().__init__()
        self.logit = nn.ParameterList([nn.Parameter(torch.full((r, n_on), ON_LOGIT_INIT)) for r in ranks])

    def logits(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        return self.logit[module.index].expand(*x.shape[:-1], -1, -1)


class PerModuleController(nn.Module):
    """TABS (and HEST's unfactorised ablation): a linear map per target module from the
    token's input to its R x (on-states) logits: O(L x R x d) parameters."""

    def __init__(self, widths: Sequence[int], ranks: Sequence[int], n_on: int):
        super().__init__()
        self.n_on = n_on
        self.proj = nn.ModuleList([nn.Linear(w, r * n_on) for w, r in zip(widths, ranks)])
        for proj in self.proj:
            nn.init.constant_(proj.bias, ON_LOGIT_INIT)

    def logits(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        return self.proj[module.index](x).unflatten(-1, (module.rank, self.n_on))


class FactorisedController(nn.Module):
    """HEST: token score sigmoid(W_tok x) (d x k, one per input width) times layer score
    sigmoid(w_layer) (L x k), mapped to per-direction logits by one shared k -> R x (on-states)
    map: O((d + L) k) parameters, and each direction keeps its own gate (the seed broadcast one
    scalar to all R directions, which made them identical)."""

    def __init__(self, widths: Sequence[int], n_layers: int, k: int, max_rank: int, n_on: int):
        super().__init__()
        self.n_on = n_on
        self.token = nn.ModuleDict({str(w): nn.Linear(w, k, bias=False) for w in sorted(set(widths))})
        self.layer = nn.Parameter(torch.zeros(n_layers, k))
        self.to_logits = nn.Linear(k, max_rank * n_on)
        nn.init.constant_(self.to_logits.bias, ON_LOGIT_INIT)

    def logits(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        score = torch.sigmoid(self.token[str(module.in_features)](x)) * torch.sigmoid(self.layer[module.layer])
        return self.to_logits(score)[..., : module.rank * self.n_on].unflatten(-1, (module.rank, self.n_on))


# ---------------------------------------------------------------- the gate set


class GateSet(nn.Module):
    """One per model: the controller, the gate states and the energy bookkeeping.

    Per forward pass it holds, per sequence, the expected adapter energy (`energy`, J) and
    FLOPs (`flops`), and the FLOPs with every direction on (`full_flops`); padding tokens
    (attention mask 0) count for nothing. Outside training it also keeps running totals
    (`totals`) and the share of (token, direction) pairs in each state per layer (`counts`).
    """

    def __init__(self, states: Sequence[str], tau: float, j_per_flop: Sequence[float], n_layers: int):
        super().__init__()
        if states[OFF] != "off":
            raise ValueError(f"the first gate state must be 'off', got {states}")
        self.states = tuple(states)
        self.tau = float(tau)
        self.j_per_flop = [float(v) for v in j_per_flop]
        self.n_layers = n_layers
        self.controller: nn.Module | None = None
        self.e_max: float | None = None  # per-sequence energy cap of the hardened model
        self._mask: torch.Tensor | None = None
        self.begin_forward()
        self.reset_totals()

    # ---- hooks on the whole model: the attention mask, and per-forward totals
    def install(self, model: nn.Module) -> None:
        model.add_module(GATES_NAME, self)
        self._handles = [model.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
                         model.register_forward_hook(self._post_hook, with_kwargs=True)]

    def uninstall(self, model: nn.Module) -> None:
        for handle in self._handles:
            handle.remove()
        delattr(model, GATES_NAME)

    def _pre_hook(self, module, args, kwargs):
        self._mask = kwargs.get("attention_mask")
        self.begin_forward()

    def _post_hook(self, module, args, kwargs, output):
        if not self.training and torch.is_tensor(self.energy):
            energy = self.energy.detach().float()
            self.totals["sequences"] += energy.numel()
            self.totals["energy_j"] += float(energy.sum())
            self.totals["max_energy_j"] = max(self.totals["max_energy_j"], float(energy.max()))
            self.totals["flops"] += float(self.flops.detach().sum())
            self.totals["full_flops"] += float(self.full_flops.detach().sum())
            self.totals["tokens"] += float(self.tokens.sum())
            self.last_energy = energy

    def begin_forward(self) -> None:
        self.energy: torch.Tensor | float = 0.0
        self.flops: torch.Tensor | float = 0.0
        self.full_flops: torch.Tensor | float = 0.0
        self.tokens: torch.Tensor | float = 0.0

    def reset_totals(self) -> None:
        self.totals = {"sequences": 0, "energy_j": 0.0, "max_energy_j": 0.0, "flops": 0.0, "full_flops": 0.0,
                       "tokens": 0.0}
        self.counts = torch.zeros(self.n_layers, len(self.states), dtype=torch.float64)
        self.last_energy = None

    # ---- gates
    def logits(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """(..., R, n_states) logits; the off state's is 0."""
        return F.pad(self.controller.logits(x, module), (1, 0))

    def probs(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """(..., R, n_states): relaxed Gumbel-softmax samples in training, argmax one-hots
        otherwise (validation then sees what the hardened model will do, before int8)."""
        logits = self.logits(x, module)
        if self.training:
            probs = F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
        else:
            probs = F.one_hot(logits.argmax(-1), len(self.states)).to(logits.dtype)
        self.account(x, module, probs)
        return probs

    def hard_states(self, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """(..., R) argmax states of the hardened model, padding off, under the energy cap."""
        logits = self.logits(x, module)
        states = logits.argmax(-1) * (self.token_weights(x) > 0).long().unsqueeze(-1)
        if self.e_max is not None:
            states = self.cap(states, logits.max(-1).values, x, module)
        self.account(x, module, F.one_hot(states, len(self.states)).to(torch.float32))
        return states

    def cap(self, states: torch.Tensor, scores: torch.Tensor, x: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """Drop the lowest-scoring (token, direction) choices of each sequence until this
        module's energy is within its share of E_max (shares sum to 1 over the modules, so
        a whole forward pass stays within E_max). A 2-D input is one sequence."""
        energy = self.state_energy(module).to(x.device)[states]  # (..., T, R)
        flat_e = energy.reshape(-1, energy.shape[-2] * energy.shape[-1]) if x.dim() > 2 else energy.reshape(1, -1)
        flat_s = scores.reshape(flat_e.shape)
        order = flat_s.argsort(dim=-1, descending=True)
        within = flat_e.gather(-1, order).cumsum(-1) <= self.e_max * module.cap_share
        keep = torch.zeros_like(within).scatter(-1, order, within)
        return states * keep.reshape(states.shape).long()

    # ---- energy model
    def state_energy(self, module: nn.Module) -> torch.Tensor:
        """(n_states,) joules per token of one direction of `module` in each state."""
        return torch.tensor(self.j_per_flop, dtype=torch.float32) * module.flops_dir

    def token_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) 1 for real tokens, 0 for padding, aligned with x's leading dimensions."""
        mask = self._mask
        if mask is None or x.dim() != 3 or mask.shape[0] != x.shape[0] or mask.shape[1] < x.shape[1]:
            return torch.ones(x.shape[:-1], device=x.device)
        return mask[:, -x.shape[1]:].to(device=x.device, dtype=torch.float32)  # cached decoding: the new tokens

    def account(self, x: torch.Tensor, module: nn.Module, probs: torch.Tensor) -> None:
        weights = self.token_weights(x)
        if x.dim() == 2:  # one sequence without a batch dimension
            probs, weights = probs.unsqueeze(0), weights.unsqueeze(0)
        state_e = self.state_energy(module).to(probs.device, probs.dtype)
        on = 1.0 - probs[..., OFF]
        per_token_e = (probs * state_e).sum((-1, -2))
        per_token_f = on.sum(-1) * module.flops_dir
        self.energy = self.energy + (per_token_e * weights).sum(-1)
        self.flops = self.flops + (per_token_f * weights).sum(-1)
        self.full_flops = self.full_flops + weights.sum(-1) * module.rank * module.flops_dir
        if module.index == 0:
            self.tokens = self.tokens + weights.sum(-1)
        if not self.training:
            share = (probs.detach() * weights[..., None, None]).sum(dim=tuple(range(probs.dim() - 1)))
            self.counts[module.layer] += share.double().cpu()

    def set_cap_shares(self, modules: Sequence[nn.Module]) -> None:
        full = [m.rank * m.flops_dir for m in modules]
        for module, cost in zip(modules, full):
            module.cap_share = cost / sum(full)

    def utilisation(self) -> dict[str, list[float]]:
        """{state: share of (token, direction) pairs per layer} over the totals' passes."""
        totals = self.counts.sum(-1, keepdim=True).clamp(min=1e-12)
        shares = (self.counts / totals).tolist()
        return {state: [row[i] for row in shares] for i, state in enumerate(self.states)}


# ---------------------------------------------------------------- layers


class SpectralLinear(nn.Module):
    """A target linear layer with R gated spectral directions (training form)."""

    def __init__(self, base_layer: nn.Linear, rank: int, index: int, layer: int, gates: GateSet,
                 dropout: float = 0.0, from_svd: bool = True):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.rank = min(rank, self.in_features, self.out_features)
        self.index, self.layer = index, layer
        self.flops_dir = direction_flops(self.in_features, self.out_features)
        self.cap_share = 1.0
        weight = base_layer.weight
        if from_svd:
            u, s, v = svd_directions(weight, self.rank)
        else:  # filled by load_state_dict (a saved adapter keeps its own U, S, V)
            u, s, v = (torch.zeros(self.out_features, self.rank), torch.zeros(self.rank),
                       torch.zeros(self.in_features, self.rank))
        self.register_buffer("u", u.to(weight.device, weight.dtype))
        self.register_buffer("s", s.to(weight.device, weight.dtype))
        self.register_buffer("v", v.to(weight.device, weight.dtype))
        self.du = nn.Parameter(torch.zeros_like(self.u))
        self.dv = nn.Parameter(torch.zeros_like(self.v))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        object.__setattr__(self, "gates", gates)  # shared by every layer: not a child module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = 1.0 - self.gates.probs(x, self)[..., OFF]
        return self.base_layer(x) + self.update(self.dropout(x), on)

    def update(self, x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        scale = self.s * on
        return ((x @ self.dv) * scale) @ self.u.T + ((x @ (self.v + self.dv)) * scale) @ self.du.T

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(right: 2R x in, left: out x 2R) in float32 with update(x, on=1) = left @ (right @ x):
        right rows [s dv ; s (v + dv)], left columns [u , du]."""
        s = self.s.detach().float()[:, None]
        right = torch.cat([s * self.dv.detach().float().T, s * (self.v + self.dv).detach().float().T])
        left = torch.cat([self.u.detach().float(), self.du.detach().float()], dim=1)
        return right, left


def quantise_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (q, scale) with t ~ q * scale[:, None]."""
    scale = t.abs().amax(-1).float().clamp(min=1e-12) / 127.0
    q = torch.round(t.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_matmul(a: torch.Tensor, b: torch.Tensor, cuda_rules: bool | None = None) -> torch.Tensor:
    """a (M x K) @ b (K x N), int8 in, int32 out, through torch._int_mm. On CUDA it needs
    M > 16 and K, N multiples of 8: the operands are zero-padded to that and the result cut."""
    if cuda_rules is None:
        cuda_rules = a.is_cuda
    m, k = a.shape
    n = b.shape[1]
    if not cuda_rules:
        return torch._int_mm(a.contiguous(), b.contiguous())
    pm, pk, pn = max(24, -(-m // 8) * 8) - m, -k % 8, -n % 8
    a = F.pad(a, (0, pk, 0, pm))
    b = F.pad(b, (0, pn, 0, pk))
    return torch._int_mm(a.contiguous(), b.contiguous())[:m, :n]


class HardenedSpectralLinear(nn.Module):
    """Inference form of a token-gated SpectralLinear: argmax gates (capped), off directions
    skipped, int8 directions through int8 GEMMs, the rest in the device's 16-bit type."""

    def __init__(self, base_layer: nn.Linear, rank: int, index: int, layer: int, gates: GateSet,
                 flops_dir: int, cap_share: float):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.rank, self.index, self.layer = rank, index, layer
        self.flops_dir, self.cap_share = flops_dir, cap_share
        r2 = 2 * rank
        self.register_buffer("right16", torch.zeros(r2, self.in_features, dtype=torch.bfloat16))
        self.register_buffer("left16", torch.zeros(self.out_features, r2, dtype=torch.bfloat16))
        self.register_buffer("right8", torch.zeros(r2, self.in_features, dtype=torch.int8))
        self.register_buffer("right8_scale", torch.zeros(r2))
        self.register_buffer("left8", torch.zeros(self.out_features, r2, dtype=torch.int8))
        self.register_buffer("left8_scale", torch.zeros(self.out_features))
        object.__setattr__(self, "gates", gates)
        self._half: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_trained(cls, trained: SpectralLinear) -> "HardenedSpectralLinear":
        module = cls(trained.base_layer, trained.rank, trained.index, trained.layer, trained.gates,
                     trained.flops_dir, trained.cap_share)
        right, left = trained.factors()
        module.right16.copy_(right)
        module.left16.copy_(left)
        q, scale = quantise_rows(right)
        module.right8.copy_(q)
        module.right8_scale.copy_(scale)
        q, scale = quantise_rows(left)  # per output channel
        module.left8.copy_(q)
        module.left8_scale.copy_(scale)
        return module.to(trained.u.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        states = self.gates.hard_states(x, self).reshape(-1, self.rank)
        flat = x.reshape(-1, self.in_features)
        delta = None
        for code, state in enumerate(self.gates.states):
            if state == "off":
                continue
            active = states == code
            dirs = active.any(0).nonzero().flatten()
            if dirs.numel() == 0:  # no token put any direction in this state: nothing computed
                continue
            cols = torch.cat([dirs, dirs + self.rank])
            mask = active[:, dirs]
            mask = torch.cat([mask, mask], dim=1)
            part = self._int8(flat, cols, mask) if state == "int8" else self._16bit(flat, cols, mask)
            delta = part if delta is None else delta + part
        if delta is None:
            return y
        return y + delta.reshape(*x.shape[:-1], self.out_features).to(y.dtype)

    def _16bit(self, x: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        right, left = self._factors16(x.device)
        z = (x.to(right.dtype) @ right[cols].T) * mask.to(right.dtype)
        return z @ left[:, cols].T

    def _int8(self, x: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xq, xs = quantise_rows(x)
        z = int8_matmul(xq, self.right8[cols].T).float() * xs[:, None] * self.right8_scale[cols][None, :]
        zq, zs = quantise_rows(z * mask)
        return int8_matmul(zq, self.left8[:, cols].T).float() * zs[:, None] * self.left8_scale[None, :]

    def _factors16(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """bf16 on a CPU; fp16 on a GPU (what the seed's fp16 state means there)."""
        if device.type != "cuda":
            return self.right16, self.left16
        if device not in self._half:
            self._half[device] = (self.right16.to(device, torch.float16), self.left16.to(device, torch.float16))
        return self._half[device]


def merge_static(module: SpectralLinear, on: torch.Tensor) -> nn.Linear:
    """The base layer with the directions `on` (a bool per direction) merged into its weight:
    exact for gates that are the same for every token (BHSP)."""
    right, left = module.factors()
    keep = torch.cat([on, on]).to(right.device)
    base = module.base_layer
    with torch.no_grad():
        base.weight += (left[:, keep] @ right[keep]).to(base.weight.dtype)
    return base


__all__ = [
    "FactorisedController", "GATES_NAME", "GateSet", "HardenedSpectralLinear", "OFF", "PerModuleController",
    "SpectralLinear", "StaticController", "direction_flops", "int8_matmul", "layer_index", "merge_static",
    "quantise_rows", "svd_directions",
]
