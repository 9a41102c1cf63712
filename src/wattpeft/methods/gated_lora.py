"""Gated LoRA with a hardware cost (seed 002): what DiGASE, EChorda and MetaS-PEFT share.

Structure. LoRA (B A, scaling alpha / r, ranks from the shared budget rule) on the target
modules (default q and v: BERT `query`, `value`; Llama `q_proj`, `v_proj`), each wrapping
its frozen `base_layer`, and hard-concrete gates (methods/hard_concrete.py), one
`GateBank` per model, hung on it as `gated_lora_gates`:

- ranks (modules x r_max): rank j of module m adds z_mj x (B[:, j] A[j] x) x scaling;
- heads (layers x heads; EChorda and MetaS-PEFT): head h of layer l has its context scaled
  by z_lh before the attention output projection (BERT `attention.output.dense`, Llama
  `o_proj`); refused on a grouped-query model (num_key_value_heads < num_attention_heads),
  where a key/value head serves several query heads;
- layers (whole blocks): h_out = h_in + z_l (block(h_in) - h_in), so z_l = 0 skips the block.

The gates are drawn once per forward pass of the model (a forward pre-hook): a
reparameterised sample in training, the deterministic gate in eval.

Expected configuration s (differentiable in the gates' log_alpha), from P(open):
kept_layers = sum_l p_l; kept_heads = heads kept per kept layer, sum_l p_l sum_h p_lh / sum_l p_l
(all heads without a head gate); kept_ranks = mean kept rank per adapted module of the kept
layers, sum_m p_l(m) sum_j p_mj / sum_m p_l(m) (the plain mean while every layer is kept);
seq_len and param_bits are the method config's deployment setting. The hardened
configuration counts the same way with the kept gates (0/1) in place of P(open).

Loss: task + l0_weight x (expected open gates / gates) + the method's cost of s
(`FlopsCost`, `RegressionEnergyCost`, `SurrogateCost`), each part logged under its name.

Hardening (kept iff the deterministic gate is > 0, hard_concrete.py) removes what is closed,
through methods/pruning.py where the base weights are cut: closed layers leave the layer list
(config.num_hidden_layers follows, `layer_idx` renumbered), closed heads are sliced out of
q/k/v rows and the output projection's columns, LoRA's B rows and A columns with them (a
layer with no head left computes only the projection's bias), closed ranks out of A and B (a
module with none left keeps an empty adapter: rank 0, counted so in kept_ranks). Kept gates
are folded in: heads into the output projection's columns, ranks into B's
columns, and a kept layer's value, when below 1, stays as a per-layer scalar. The hardened
model computes what the gated model computes in eval mode. LoRA stays unmerged (the cost
model counts kept ranks); the export is the model's config, its weights and the layout
(heads per layer, LoRA ranks, layer scalars), reloaded through `methods.load_export`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AdapterMethod, count_params, target_linears
from .hard_concrete import HardConcreteGate
from .pruning import ATTENTION_PATHS, architecture, block_list, head_dim, remove_heads, remove_layers
from .spectral_method import config_params, task_head

GATES_NAME = "gated_lora_gates"  # where the GateBank hangs in the model
ADAPTER_TENSORS = "gated_adapter.safetensors"
ADAPTER_META = "gated_adapter.json"
EXPORT_TENSORS = "gated_export.safetensors"
EXPORT_META = "gated_export.json"
HEAD_PREFIX = "task_head."
DEFAULT_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}
KINDS = ("layers", "heads", "ranks")
_EPS = 1e-6


# ---------------------------------------------------------------- the backbone's anatomy


@dataclass(frozen=True)
class Anatomy:
    """Where the parts gating needs live in a BERT- or Llama-style model (pruning.py's paths;
    paths inside one block are relative to the block)."""

    arch: str
    layers: str  # dotted path of the ModuleList of blocks
    core: str  # the module that computes the heads' context
    qkv: tuple[str, str, str]
    out: str  # the attention output projection
    heads: int
    head_dim: int

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def layer_of(self, name: str) -> int:
        """The block a module belongs to (its index in the layer list), -1 outside it."""
        match = re.match(rf"{re.escape(self.layers)}\.(\d+)\.", name)
        return int(match.group(1)) if match else -1


CORE = {"bert": "attention.self", "llama": "self_attn"}  # the module that holds q, k, v


def anatomy(model: nn.Module) -> Anatomy:
    arch = architecture(model)
    blocks = block_list(model)
    layers = next(name for name, module in model.named_modules() if module is blocks)
    *qkv, out = ATTENTION_PATHS[arch]
    return Anatomy(arch, layers, CORE[arch], tuple(qkv), out, int(model.config.num_attention_heads), head_dim(model))


def refuse_grouped_query(model: nn.Module, method: str) -> None:
    config = model.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if kv_heads < config.num_attention_heads:
        raise ValueError(
            f"{method}: gates attention heads, but this model uses grouped-query attention "
            f"(num_key_value_heads {kv_heads} < num_attention_heads {config.num_attention_heads}): a key/value "
            "head serves several query heads, so a query head cannot be removed with its keys and values. "
            "Use a model with one key/value head per head, or digase (no head gates)."
        )


# ---------------------------------------------------------------- gates and LoRA


class GateBank(nn.Module):
    """The model's hard-concrete gates: layers (L,), heads (L, H) (or none: `gate_heads` False),
    ranks (M, r_max) with `rank_valid` marking the ranks each module has. `refresh()` draws this
    forward pass's values (a sample in training, the deterministic gate in eval)."""

    def __init__(self, n_layers: int, heads: int, ranks: list[int], module_layers: list[int],
                 temperature: float, gate_heads: bool = True):
        super().__init__()
        self.layers = HardConcreteGate(n_layers, temperature=temperature)
        self.heads = HardConcreteGate((n_layers, heads), temperature=temperature) if gate_heads else None
        self.ranks = HardConcreteGate((len(ranks), max(ranks)), temperature=temperature)
        self.n_heads = heads
        self.register_buffer("rank_valid", torch.arange(max(ranks))[None, :] < torch.tensor(ranks)[:, None],
                             persistent=False)
        self.register_buffer("module_layers", torch.tensor(module_layers), persistent=False)
        self.values: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []

    def gates(self) -> dict[str, HardConcreteGate]:
        return {kind: gate for kind in KINDS if (gate := getattr(self, kind)) is not None}

    def refresh(self) -> None:
        self.values = {kind: gate() for kind, gate in self.gates().items()}

    def value(self, kind: str) -> torch.Tensor:
        if kind not in self.values:
            self.refresh()
        return self.values[kind]

    def l0_share(self) -> torch.Tensor:
        """Expected open gates / gates (ranks a module does not have are left out)."""
        opened = self.layers.l0_penalty() + (self.ranks.expected_open() * self.rank_valid).sum()
        count = self.layers.log_alpha.numel() + int(self.rank_valid.sum())
        if self.heads is not None:
            opened = opened + self.heads.l0_penalty()
            count += self.heads.log_alpha.numel()
        return opened / count

    def expected_counts(self) -> dict[str, torch.Tensor]:
        """Expected kept layers, heads per kept layer and rank per adapted module (differentiable)."""
        heads = self.heads.expected_open() if self.heads is not None else None
        return kept_counts(self.layers.expected_open(), heads, self.ranks.expected_open() * self.rank_valid,
                           self.module_layers, self.n_heads)

    @torch.no_grad()
    def hard_counts(self) -> dict[str, torch.Tensor]:
        """The same counts for the hardened model (kept gates as 1, closed ones as 0)."""
        masks = {kind: gate.hard_mask().float() for kind, gate in self.gates().items()}
        return kept_counts(masks["layers"], masks.get("heads"), masks["ranks"] * self.rank_valid,
                           self.module_layers, self.n_heads)

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def kept_counts(layers: torch.Tensor, heads: torch.Tensor | None, ranks: torch.Tensor,
                module_layers: torch.Tensor, n_heads: int) -> dict[str, torch.Tensor]:
    """s's kept_layers, kept_heads, kept_ranks from per-gate keep weights (P(open), or 0/1):
    heads per kept layer and rank per adapted module of the kept layers, weighted by the layer's
    weight (a module outside the layer stack weighs 1)."""
    kept_layers = layers.sum()
    if heads is None:
        kept_heads = torch.tensor(float(n_heads), device=layers.device)
    else:
        kept_heads = (layers * heads.sum(dim=1)).sum() / kept_layers.clamp(min=_EPS)
    weight = torch.where(module_layers >= 0, layers[module_layers.clamp(min=0)], torch.ones_like(ranks[:, 0]))
    kept_ranks = (weight * ranks.sum(dim=1)).sum() / weight.sum().clamp(min=_EPS)
    return {"kept_layers": kept_layers, "kept_heads": kept_heads, "kept_ranks": kept_ranks}


class GatedLoraLinear(nn.Module):
    """base_layer(x) + scaling x B (z o (A dropout(x))), z the module's rank gates (none once
    hardened: the kept gates are folded into B)."""

    def __init__(self, base_layer: nn.Linear, rank: int, scaling: float, dropout: float = 0.0,
                 index: int = -1, bank: GateBank | None = None):
        super().__init__()
        self.base_layer = base_layer
        self.rank, self.scaling, self.index = int(rank), float(scaling), int(index)
        weight = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base_layer.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base_layer.out_features, rank, device=weight.device, dtype=weight.dtype))
        if self.lora_A.numel():  # an empty A (no input column left) needs no initialisation
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's LoRA initialisation
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._bank = (bank,)  # a reference, not a submodule: the bank hangs on the model

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, gated={self._bank[0] is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        low = F.linear(self.lora_dropout(x).to(self.lora_A.dtype), self.lora_A)
        bank = self._bank[0]
        if bank is not None:
            low = low * bank.value("ranks")[self.index, : self.rank].to(low.dtype)
        return out + (F.linear(low, self.lora_B) * self.scaling).to(out.dtype)


class NoHeads(nn.Module):
    """An attention block whose heads were all removed. It keeps its (now empty) projections
    under their own names, so that paths and state-dict keys stay those of the block, and
    returns the output projection of an empty context when it holds one (Llama's `o_proj`;
    BERT's lies outside, in `attention.output`): the block adds that projection's bias."""

    def __init__(self, core: nn.Module, out: str | None):
        super().__init__()
        for name, child in core.named_children():
            if isinstance(child, (nn.Linear, GatedLoraLinear)):
                self.add_module(name, child)
        self.out = out

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        return (self.get_submodule(self.out)(context) if self.out else context), None


# ---------------------------------------------------------------- hooks


class LayerGate:
    """Forward hook on a block: h_in + z (block(h_in) - h_in), z from the bank (training) or a
    constant (a hardened block whose gate was below 1)."""

    def __init__(self, index: int, bank: GateBank | None = None, scale: float = 1.0):
        self.index, self.bank, self.scale = index, bank, scale

    def __call__(self, module, args, kwargs, output):
        h_in = args[0] if args else kwargs["hidden_states"]
        z = self.bank.value("layers")[self.index] if self.bank is not None else self.scale
        first = output[0] if isinstance(output, tuple) else output
        gated = h_in + (z.to(first.dtype) if torch.is_tensor(z) else z) * (first - h_in)
        return (gated, *output[1:]) if isinstance(output, tuple) else gated


class HeadGate:
    """Forward pre-hook on an attention output projection: each head's context times z_lh."""

    def __init__(self, index: int, bank: GateBank, head_dim: int):
        self.index, self.bank, self.head_dim = index, bank, head_dim

    def __call__(self, module, args):
        x = args[0]
        z = self.bank.value("heads")[self.index].to(x.dtype)
        scaled = (x.unflatten(-1, (-1, self.head_dim)) * z[:, None]).flatten(-2)
        return (scaled, *args[1:])


def refresh_hook(bank: GateBank):
    def hook(module, args):
        bank.refresh()
    return hook


# ---------------------------------------------------------------- surgery (pruning.py, plus LoRA)


def base_linear(module: nn.Module) -> nn.Linear:
    return module.base_layer if isinstance(module, GatedLoraLinear) else module


def prune_heads(model: nn.Module, block: nn.Module, anat: Anatomy, keep: torch.Tensor,
                scale: torch.Tensor | None = None) -> None:
    """Remove the heads of `block` not in `keep` (bool, per head): pruning.remove_heads cuts the
    base weights (folding `scale`, per head, into the output projection's columns); the LoRA
    paths follow (B's rows of adapted q/k/v, A's columns of an adapted output projection). A
    block left without a head gets `NoHeads` in place of its attention core."""
    keep = keep.to("cpu")
    heads = torch.nonzero(keep).flatten().tolist()
    remove_heads(model, block, heads, None if scale is None else scale.to("cpu")[keep])
    rows = (torch.tensor(heads, dtype=torch.long)[:, None] * anat.head_dim + torch.arange(anat.head_dim)).flatten()
    with torch.no_grad():
        for path in anat.qkv:
            module = block.get_submodule(path)
            if isinstance(module, GatedLoraLinear):
                module.lora_B = nn.Parameter(module.lora_B[rows.to(module.lora_B.device)].clone(), requires_grad=False)
        out = block.get_submodule(anat.out)
        if isinstance(out, GatedLoraLinear):
            factor = torch.ones(len(keep)) if scale is None else scale.to("cpu")
            columns = factor.repeat_interleave(anat.head_dim).to(out.lora_A)
            scaled = (out.lora_A * columns)[:, rows.to(out.lora_A.device)]
            out.lora_A = nn.Parameter(scaled.clone(), requires_grad=False)
    if not heads:
        core = block.get_submodule(anat.core)
        inside = anat.out.removeprefix(f"{anat.core}.")
        block.set_submodule(anat.core, NoHeads(core, inside if inside != anat.out else None))


def add_layer_scales(model: nn.Module, anat: Anatomy, scales: list[float]) -> list[Any]:
    layers = anat.layer_list(model)
    return [layers[i].register_forward_hook(LayerGate(i, scale=s), with_kwargs=True)
            for i, s in enumerate(scales) if s < 1.0]


def heads_per_layer(model: nn.Module, anat: Anatomy) -> list[int]:
    return [base_linear(block.get_submodule(anat.qkv[0])).out_features // anat.head_dim
            for block in anat.layer_list(model)]


# ---------------------------------------------------------------- costs of s


def as_tensors(s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """s as float32 CPU tensors (a gate's tensor keeps its graph): costs are a few scalars."""
    return {k: (v.float().cpu() if torch.is_tensor(v) else torch.tensor(float(v))) for k, v in s.items()}


class FlopsCost:
    """DiGASE: lambda_flops x FLOPs(s) / FLOPs(full model), the roofline workload's FLOPs of one
    sequence (devices/roofline.py, evaluated on tensors), no device involved."""

    def __init__(self, shape, full: Mapping[str, Any], weight: float):
        from ..devices.roofline import workload

        self.shape, self.weight, self.workload = shape, float(weight), workload
        self.full_flops = float(workload(shape, as_tensors(full)).flops)

    def relative(self, s: Mapping[str, Any]) -> torch.Tensor:
        return self.workload(self.shape, as_tensors(s)).flops / self.full_flops

    def terms(self, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss_cost": self.weight * self.relative(s)}

    def predict(self, s: Mapping[str, Any]) -> dict[str, float]:
        with torch.no_grad():
            return {"relative_flops": float(self.relative(s))}

    def stats(self) -> dict[str, Any]:
        return {"cost_model": "analytic FLOPs of s relative to the full model (roofline workload, no device)",
                "full_flops_per_sequence": self.full_flops, "on_device_measurements": 0}


class RegressionEnergyCost:
    """EChorda: log E = w . standardised features(s) + b, a ridge regression fitted on
    `n_measurements` rows of the target device drawn (seeded) from the device table; the
    features are the meta-surrogate's (surrogate/model.py). Cost lambda_energy E / budget."""

    def __init__(self, table, device: str | None, config, totals: Mapping[str, float], full: Mapping[str, Any]):
        from ..surrogate.model import features

        self.features, self.totals = features, dict(totals)
        rows = target_rows(table, device, config.n_measurements)
        picked = np.random.default_rng(config.measurement_seed).choice(len(rows), config.n_measurements, replace=False)
        rows = rows.iloc[np.sort(picked)]
        x = features(rows, self.totals).double()
        y = torch.as_tensor(np.log(rows["energy_j"].to_numpy(dtype=np.float64)))
        self.mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))
        z = (x - self.mean) / self.std
        gram = z.T @ z + config.ridge_alpha * len(rows) * torch.eye(z.shape[1], dtype=z.dtype)
        self.intercept = y.mean()
        self.coef = torch.linalg.pinv(gram) @ (z.T @ (y - self.intercept))
        fitted = z @ self.coef + self.intercept
        self.r2 = float(1 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum().clamp(min=1e-300))
        self.device, self.rows = device, rows
        self.weight = float(config.lambda_energy)
        self.budget = float(config.energy_budget_j or self.predict(full)["energy_j"])

    def energy(self, s: Mapping[str, Any]) -> torch.Tensor:
        x = self.features(as_tensors(s), self.totals)
        z = (x - self.mean.float()) / self.std.float()
        return torch.exp(z @ self.coef.float() + self.intercept.float())[0]

    def terms(self, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss_energy": self.weight * self.energy(s) / self.budget}

    def predict(self, s: Mapping[str, Any]) -> dict[str, float]:
        with torch.no_grad():
            return {"energy_j": float(self.energy(s))}

    def stats(self) -> dict[str, Any]:
        return {"cost_model": "ridge regression of log energy on the surrogate's features of s",
                "target_device": self.device, "on_device_measurements": len(self.rows),
                "target_device_source": sorted(set(self.rows["source"])), "regression_r2_log_energy": self.r2,
                "energy_budget_j": self.budget}


def target_rows(table, device: str | None, needed: int):
    """The device table's rows of `device` with a measured energy, at least `needed` of them."""
    if table is None:
        raise ValueError("echorda: needs the device table (inputs['device_table']; registry needs 'device_table')")
    devices = sorted(set(table["device"]))
    if device is None or device not in devices:
        raise ValueError(f"echorda: target_device {device!r} is not in the device table; set target_device to "
                         f"one of {devices}")
    rows = table[(table["device"] == device) & np.isfinite(table["energy_j"].to_numpy(dtype=np.float64))]
    if len(set(rows["model"])) > 1:
        raise ValueError(f"echorda: the device table holds rows of several models for {device!r}: "
                         f"{sorted(set(rows['model']))}; give one backbone's table")
    if len(rows) < needed:
        raise ValueError(f"echorda: the device table holds {len(rows)} rows with a measured energy for target "
                         f"device {device!r}, fewer than n_measurements = {needed}; profile more configurations "
                         "on it or lower n_measurements")
    return rows


class SurrogateCost:
    """MetaS-PEFT: the meta-surrogate's (E, L, P) of s on the target device, calibrated,
    cost lambda E / E_budget + mu L / L_budget + nu P / P_budget; the gradient flows through
    the (frozen) surrogate into the gates. The target device: None, the surrogate's calibrated
    unseen device (uniform tag + calibration); a training device of the surrogate, its own tag
    (no calibration); any other name must be the device the store was calibrated on."""

    def __init__(self, surrogate, config, n_layers: int, n_heads: int, full: Mapping[str, Any]):
        if surrogate is None:
            raise ValueError("metas_peft: needs the meta-surrogate (inputs['surrogate']; registry needs 'surrogate')")
        model, calibration = surrogate
        totals = model.totals
        if (totals["kept_layers"], totals["kept_heads"]) != (n_layers, n_heads):
            raise ValueError(f"metas_peft: the surrogate was trained for a backbone with {totals['kept_layers']:g} "
                             f"layers and {totals['kept_heads']:g} heads; this model has {n_layers} and {n_heads}")
        device = config.target_device
        self.role = "training device of the surrogate" if device in model.devices else "unseen, calibrated"
        if self.role != "training device of the surrogate" and calibration is None:
            raise ValueError(f"metas_peft: target_device {device!r} is no training device of the surrogate "
                             f"({list(model.devices)}) and the surrogate holds no calibration")
        calibrated = getattr(model, "calibrated_device", None)
        if self.role != "training device of the surrogate" and device is not None and device != calibrated:
            raise ValueError(f"metas_peft: target_device {device!r} is neither a training device of the surrogate "
                             f"({list(model.devices)}) nor the device it was calibrated on ({calibrated!r})")
        self.model = model.eval().requires_grad_(False)
        self.calibration = calibration if self.role != "training device of the surrogate" else None
        self.device = device
        self.measurements = max(self.calibration.points) if self.calibration is not None else 0
        self.weights = (config.lambda_energy, config.mu_latency, config.nu_power)
        predicted = self.predict(full)
        self.budgets = (config.energy_budget_j or predicted["energy_j"], config.latency_budget_ms or
                        predicted["latency_ms"], config.power_budget_w or predicted["peak_power_w"])

    def metrics(self, s: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model.features(as_tensors(s))
        energy, latency, power = self.model.predict(x, self.model.tag(self.device, 1), self.calibration)
        return energy[0], latency[0], power[0]

    def terms(self, s: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        names = ("loss_energy", "loss_latency", "loss_power")
        return {name: w * value / budget
                for name, w, value, budget in zip(names, self.weights, self.metrics(s), self.budgets)}

    def predict(self, s: Mapping[str, Any]) -> dict[str, float]:
        with torch.no_grad():
            return dict(zip(("energy_j", "latency_ms", "peak_power_w"), (float(v) for v in self.metrics(s))))

    def stats(self) -> dict[str, Any]:
        return {"cost_model": "meta-surrogate (E, L, P), calibrated; no device call in training",
                "target_device": self.device, "target_device_role": self.role,
                "on_device_measurements": self.measurements,
                "energy_budget_j": self.budgets[0], "latency_budget_ms": self.budgets[1],
                "power_budget_w": self.budgets[2]}


# ---------------------------------------------------------------- the method


class GatedLoraMethod(AdapterMethod):
    gate_heads = True  # DiGASE: False (depth and rank only)
    hardening_note = ("hard-concrete gates fixed at their deterministic values: closed layers, heads and LoRA "
                      "ranks removed from the model, kept gates folded into the weights (a layer below 1 kept "
                      "as a scalar); LoRA left unmerged")

    @abstractmethod
    def build_cost(self, model: nn.Module, anat: Anatomy, full: dict[str, Any], max_rank: int):
        """The method's cost model of s (FlopsCost, RegressionEnergyCost or SurrogateCost)."""

    def target_names(self, model: nn.Module) -> list[str]:
        return list(self.config.target_modules or DEFAULT_TARGETS[architecture(model)])

    # ---------------------------------------------------------------- attach
    def attach(self, model: nn.Module) -> nn.Module:
        allocation = self.allocate(model)
        anat = anatomy(model)
        if self.gate_heads:
            refuse_grouped_query(model, self.name)
        self.full = {"seq_len": self.config.seq_len, "kept_layers": len(anat.layer_list(model)),
                     "kept_heads": anat.heads, "kept_ranks": allocation.mean_rank,
                     "param_bits": self.config.param_bits}
        self.cost = self.build_cost(model, anat, self.full, max(allocation.ranks.values()))
        model = self._wrap(model, allocation.ranks)
        adapter = sum(m.lora_A.numel() + m.lora_B.numel() for m in self.modules.values())
        self.stats = {
            **self.budget_stats(allocation, adapter_params=adapter, effective_params=adapter,
                                trainable_params=count_params(model, trainable_only=True),
                                controller_params=count_params(self.bank)),
            "target_modules": self.target_names(model),
            "gated": list(self.bank.gates()),
            "gate_lr": self.config.gate_lr,
            "l0_weight": self.config.l0_weight,
            "full_configuration": self.full,
            "full_prediction": self.cost.predict(self.full),
            **self.cost.stats(),
        }
        return model

    def _wrap(self, model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
        """Freeze `model`, put LoRA on the modules of `ranks` and hang the gates on it."""
        for param in model.parameters():
            param.requires_grad_(False)
        if self.task == "classification":  # the task head trains whole, as peft's modules_to_save
            for param in task_head(model).values():
                param.requires_grad_(True)
        anat = anatomy(model)
        if self.gate_heads:
            refuse_grouped_query(model, self.name)
        names = [name for name, _ in model.named_modules() if name in ranks]  # model order
        if len(names) != len(ranks):
            raise ValueError(f"{self.name}: the model has no module {sorted(set(ranks) - set(names))[:3]}")
        layers = anat.layer_list(model)
        bank = GateBank(len(layers), anat.heads, [ranks[n] for n in names], [anat.layer_of(n) for n in names],
                        self.config.temperature, self.gate_heads)
        bank.to(next(model.parameters()).device)
        alpha = self.config.alpha
        self.modules = {}
        for index, name in enumerate(names):
            rank = int(ranks[name])
            module = GatedLoraLinear(model.get_submodule(name), rank, 2.0 if alpha is None else alpha / rank,
                                     self.config.dropout, index, bank)
            model.set_submodule(name, module)
            self.modules[name] = module
        model.add_module(GATES_NAME, bank)
        bank.handles.append(model.register_forward_pre_hook(refresh_hook(bank)))
        for index, block in enumerate(layers):
            bank.handles.append(block.register_forward_hook(LayerGate(index, bank), with_kwargs=True))
            if self.gate_heads:
                hook = HeadGate(index, bank, anat.head_dim)
                bank.handles.append(block.get_submodule(anat.out).register_forward_pre_hook(hook))
        self.bank, self.anatomy = bank, anat
        return model

    # ---------------------------------------------------------------- training
    def expected_s(self) -> dict[str, torch.Tensor]:
        return {**self.bank.expected_counts(), "seq_len": self.config.seq_len, "param_bits": self.config.param_bits}

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor:
        terms = {"loss_l0": self.config.l0_weight * self.bank.l0_share().cpu(), **self.cost.terms(self.expected_s())}
        self._terms = {name: float(value.detach()) for name, value in terms.items()}
        return sum(terms.values()).to(self.bank.layers.log_alpha.device)

    def loss_terms(self) -> dict[str, float]:
        return dict(getattr(self, "_terms", {}))

    def log_fields(self) -> dict[str, float]:
        with torch.no_grad():
            return {f"expected_{k}": float(v) for k, v in self.bank.expected_counts().items()}

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The gates at `gate_lr` without weight decay; the rest at the training config's values."""
        gates = list(self.bank.parameters())
        ids = {id(p) for p in gates}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest}, {"params": gates, "lr": self.config.gate_lr, "weight_decay": 0.0}]

    def gate_stats(self) -> dict[str, Any]:
        """Expected and hardened kept counts, and the cost model's prediction for the hardened s."""
        with torch.no_grad():
            expected = {k: float(v) for k, v in self.bank.expected_counts().items()}
            hard = {k: float(v) for k, v in self.bank.hard_counts().items()}
        hard_s = {**hard, "seq_len": self.config.seq_len, "param_bits": self.config.param_bits}
        stats = {"expected_kept": expected, "hard_kept": hard}
        if getattr(self, "cost", None) is not None:
            stats["hardened_prediction"] = self.cost.predict(hard_s)
        return stats

    # ---------------------------------------------------------------- save / load
    def save(self, model: nn.Module, out_dir: Path) -> None:
        from safetensors.torch import save_file

        self.stats.update(self.gate_stats())
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tensors = {f"{name}.{key}": getattr(m, key).detach().contiguous().cpu()
                   for name, m in self.modules.items() for key in ("lora_A", "lora_B")}
        tensors.update({f"{GATES_NAME}.{k}": t.detach().contiguous().cpu() for k, t in self.bank.state_dict().items()})
        tensors.update({f"{HEAD_PREFIX}{k}": t.detach().contiguous().cpu() for k, t in task_head(model).items()})
        save_file(tensors, str(Path(out_dir) / ADAPTER_TENSORS))
        meta = {"method": self.name, "ranks": {name: m.rank for name, m in self.modules.items()}, "stats": self.stats}
        (Path(out_dir) / ADAPTER_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        from safetensors.torch import load_file

        meta = json.loads((Path(adapter_dir) / ADAPTER_META).read_text())
        model = self._wrap(base_model, meta["ranks"])
        self.stats = meta["stats"]
        tensors = load_file(str(Path(adapter_dir) / ADAPTER_TENSORS))
        with torch.no_grad():
            for name, module in self.modules.items():
                module.lora_A.copy_(tensors[f"{name}.lora_A"])
                module.lora_B.copy_(tensors[f"{name}.lora_B"])
            self.bank.load_state_dict({k.removeprefix(f"{GATES_NAME}."): t for k, t in tensors.items()
                                       if k.startswith(f"{GATES_NAME}.")})
            for key, param in task_head(model).items():
                param.copy_(tensors[f"{HEAD_PREFIX}{key}"])
        return model

    # ---------------------------------------------------------------- harden / export
    @torch.no_grad()
    def harden(self, model: nn.Module) -> nn.Module:
        model.eval()
        bank, anat = self.bank, self.anatomy
        values = {kind: gate.deterministic() for kind, gate in bank.gates().items()}
        ranks = values["ranks"] * bank.rank_valid
        for name, module in self.modules.items():
            z = ranks[module.index, : module.rank]
            kept = torch.nonzero(z > 0).flatten()  # none kept: rank 0, an adapted module with no rank
            hardened = GatedLoraLinear(module.base_layer, len(kept), module.scaling)
            hardened.lora_A = nn.Parameter(module.lora_A.detach()[kept].clone())
            hardened.lora_B = nn.Parameter((module.lora_B.detach() * z.to(module.lora_B.dtype))[:, kept].clone())
            model.set_submodule(name, hardened)
        bank.remove_hooks()
        delattr(model, GATES_NAME)
        kept_layers = torch.nonzero(values["layers"] > 0).flatten().tolist()
        if "heads" in values:
            for index in kept_layers:
                gate = values["heads"][index]
                prune_heads(model, anat.layer_list(model)[index], anat, gate > 0, gate)
        remove_layers(model, kept_layers)
        self.layer_scales = [float(values["layers"][i]) for i in kept_layers]
        add_layer_scales(model, anat, self.layer_scales)
        model.requires_grad_(False)
        return model

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        from safetensors.torch import save_model

        anat = anatomy(hardened)
        layout = {
            "method": self.name, "method_params": config_params(self.config), "budget": self.budget_pct,
            "heads_per_layer": heads_per_layer(hardened, anat), "layer_scales": self.layer_scales,
            "lora": {name: {"rank": m.rank, "scaling": m.scaling} for name, m in hardened.named_modules()
                     if isinstance(m, GatedLoraLinear)},
            "dtype": str(next(hardened.parameters()).dtype).removeprefix("torch."),
        }
        hardened.config.save_pretrained(str(out_dir))
        save_model(hardened, str(Path(out_dir) / EXPORT_TENSORS))
        (Path(out_dir) / EXPORT_META).write_text(json.dumps(layout, indent=2, sort_keys=True))
        return {"kept_layers": len(layout["heads_per_layer"]), "heads_per_layer": layout["heads_per_layer"],
                "lora_ranks": {name: v["rank"] for name, v in layout["lora"].items()},
                "layer_scales": self.layer_scales}

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        from safetensors.torch import load_model

        layout = json.loads((Path(export_dir) / EXPORT_META).read_text())
        model = model_from_config(export_dir, task, label_names)
        anat = anatomy(model)
        for block, heads in zip(anat.layer_list(model), layout["heads_per_layer"]):
            if heads < anat.heads:
                prune_heads(model, block, anat, torch.arange(anat.heads) < heads)
        for name, spec in layout["lora"].items():
            base = model.get_submodule(name)
            model.set_submodule(name, GatedLoraLinear(base, spec["rank"], spec["scaling"]))
        model.to(getattr(torch, layout["dtype"]))
        load_model(model, str(Path(export_dir) / EXPORT_TENSORS), strict=True)
        add_layer_scales(model, anat, layout["layer_scales"])
        return model.requires_grad_(False).eval()


def model_from_config(export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
    """The export's architecture from its config.json (the hardened model's, so its labels and
    pad token are those models.load_backbone set), weights not yet loaded."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    classes = {"classification": AutoModelForSequenceClassification, "summarisation": AutoModelForCausalLM,
               "lm": AutoModelForCausalLM}
    if task not in classes:
        raise ValueError(f"unsupported task {task!r}")
    config = AutoConfig.from_pretrained(str(export_dir))
    if task == "classification" and label_names:
        config.id2label, config.label2id = dict(enumerate(label_names)), {n: i for i, n in enumerate(label_names)}
    return classes[task].from_config(config)


def model_shape(model: nn.Module, modules: list[tuple[str, int, int]]):
    """devices.roofline.ModelShape of `model`, its LoRA modules those of one block: `modules`
    are (name, in, out) of every adapted module; the first block's are taken."""
    from ..devices.roofline import ModelShape

    anat = anatomy(model)
    first = min((anat.layer_of(n) for n, _, _ in modules if anat.layer_of(n) >= 0), default=-1)
    per_block = tuple((n.rsplit(".", 1)[-1], i, o) for n, i, o in modules if anat.layer_of(n) == first)
    shape = ModelShape.from_hf_config(model.config.to_dict(), lora_targets=[])
    return dataclasses.replace(shape, lora_modules=per_block)


def adapted_modules(method: AdapterMethod, model: nn.Module) -> list[tuple[str, int, int]]:
    return [(name, m.in_features, m.out_features) for name, m in target_linears(model, method.target_names(model))]


__all__ = ["Anatomy", "FlopsCost", "GATES_NAME", "GateBank", "GatedLoraLinear", "GatedLoraMethod",
           "NoHeads", "RegressionEnergyCost", "SurrogateCost", "adapted_modules", "anatomy", "base_linear",
           "kept_counts",
           "model_shape", "prune_heads"]
