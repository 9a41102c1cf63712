"""An analytic roofline model of a forward pass on a device: MODELLED, NOT MEASURED.

Every row this module makes carries `source = simulated` and a provenance that says so;
its numbers come from a device's published peak FLOP/s, memory bandwidth, idle and peak
power (`SIMULATED_DEVICES`, each figure with its source or its derivation), not from any
run on that device.

Workload of one forward pass of one sequence of T = seq_len tokens, all at once (an
encoder's pass or a decoder's prefill, not token-by-token generation) (`workload`), with
L = kept_layers, a = kept_heads x head_dim (kept attention width), a_kv = a x kv_heads / heads,
r = kept_ranks, b = param_bits, h = hidden, i = intermediate, V = vocab, and per layer:

    P_attn = 2 h a + 2 h a_kv                     (q, o: h x a; k, v: h x a_kv)
    P_mlp  = m h i                                 (m = 3 gated (Llama), 2 (BERT))
    P_lora = r x sum over adapted modules of (d_in + d_out)   (full module widths)
    X      = 3 h + 2 a + 2 a_kv + (m - 1) i + r n  (activation values per token; n modules)
    FLOPs  = L (2 T (P_attn + P_mlp + P_lora) + 4 T^2 a) + 2 h V
    bytes  = (L (P_attn + P_mlp + P_lora + 2 T X) + T h + h V) b / 8

Weights are read once per pass (the whole sequence goes through each layer at once).
4 T^2 a counts the attention scores (Q K^T) and their weighted sum with V; the scores stay
on chip (a fused attention kernel), so they add FLOPs but no T^2 traffic. X
(`activation_width`) counts a layer's input, q/k/v, attention output, residual, MLP hidden
(gate and up when gated), output and the LoRA path's rank-r values; each is written once
and read once (2 T X), in the operands' precision b, as peak_flops[b] assumes (W8A8, W4A4,
fp16, fp32). The head is one position's projection (`head_outputs`): onto the vocabulary
for a decoder (next-token logits), the pooler (h -> h) for a BERT-style encoder classifier,
whose labels are negligible; the embedding rows of the T tokens are read. Softmax, norms and activation functions (O(T h) element-wise work) are left
out.

Time, power and energy (`predict`):

    t_compute = FLOPs / peak_flops[b]        t_memory = bytes / memory_bandwidth
    latency   = max(t_compute, t_memory) + L x layer_overhead_s
    u         = (0.7 t_compute + 0.3 t_memory) / latency          (utilisation, <= 1)
    power     = idle_w + (peak_w - idle_w) u                      (mean over the pass)
    energy    = power x latency
    peak power = idle_w + (peak_w - idle_w) u_busy,  u_busy = the same u without the
                 per-layer overhead (inside a kernel, the bound resource is saturated)

The 0.7 / 0.3 split of dynamic power between arithmetic and memory traffic is an assumption
(`COMPUTE_POWER_SHARE`). The per-layer overhead (kernel launches or dispatch) is an assumed
figure per device: for a small model it dominates a GPU's latency on short sequences.

Noise (`simulate`): each metric of each row is multiplied by an independent log-normal
factor exp(sigma z), z ~ N(0, 1) (median 1), with sigma 3% for latency, 5% for energy and 4%
for peak power (`NOISE_SIGMAS`). So energy is not exactly power x latency in a noisy row.
The draws come from numpy's generator seeded by (seed, crc32 of the device name): the same
seed gives the same table, and one device's rows do not change when another is added.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .catalogue import SIMULATED_DEVICES, DeviceSpec
from .table import SIMULATED, validate_table

COMPUTE_POWER_SHARE = 0.7  # assumption: share of dynamic power that follows arithmetic
NOISE_SIGMAS = {"latency_ms": 0.03, "energy_j": 0.05, "peak_power_w": 0.04}




@dataclass(frozen=True)
class ModelShape:
    """The sizes of a transformer that the workload needs. `lora_modules`: (name, d_in, d_out)
    of each module of one layer that carries a LoRA adapter."""

    name: str
    layers: int
    heads: int
    hidden: int
    intermediate: int
    vocab: int
    lora_modules: tuple[tuple[str, int, int], ...]
    kv_heads: int = 0  # 0: as many as heads (no grouped-query attention)
    head_dim: int = 0  # 0: hidden // heads
    gated_mlp: bool = False  # Llama's gate/up/down (3 matrices) against BERT's 2
    # Outputs of the head's projection at one position: a decoder's vocabulary (the next
    # token); an encoder classifier's pooler (hidden -> hidden; its labels are negligible).
    # 0: the vocabulary.
    head_outputs: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_heads", self.kv_heads or self.heads)
        object.__setattr__(self, "head_dim", self.head_dim or self.hidden // self.heads)
        object.__setattr__(self, "head_outputs", self.head_outputs or self.vocab)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str | None = None,
                       lora_targets: Sequence[str] | None = None) -> "ModelShape":
        """From a Hugging Face config dict (Llama-style or BERT-style keys); `lora_targets`
        defaults to every linear layer the adapters use (Llama q/k/v/o, gate/up/down; BERT
        query, key, value, dense)."""
        return shape_from_config(cls, config, name, lora_targets)

    def totals(self) -> dict[str, int]:
        """The model's totals per s column, for validate_table(totals={name: shape.totals()})."""
        return {"kept_layers": self.layers, "kept_heads": self.heads}


BERT_STYLE_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta", "deberta-v2"}
HF_KEYS = {"layers": "num_hidden_layers", "heads": "num_attention_heads", "hidden": "hidden_size",
           "intermediate": "intermediate_size", "vocab": "vocab_size"}


def shape_from_config(cls: type, config: Mapping[str, Any], name: str | None,
                      lora_targets: Sequence[str] | None) -> ModelShape:
    missing = [key for key in HF_KEYS.values() if not isinstance(config.get(key), int)]
    if missing:
        raise ValueError(f"model config {name or config.get('_name_or_path', '')!r}: missing or "
                         f"non-integer key(s) {', '.join(missing)}")
    sizes = {field_name: int(config[key]) for field_name, key in HF_KEYS.items()}
    bert = config.get("model_type") in BERT_STYLE_TYPES
    kv_heads = int(config.get("num_key_value_heads") or sizes["heads"])
    head_dim = int(config.get("head_dim") or sizes["hidden"] // sizes["heads"])
    table = (bert_modules if bert else llama_modules)(sizes, kv_heads, head_dim)
    targets = list(lora_targets) if lora_targets is not None else list(dict.fromkeys(n for n, _, _ in table))
    unknown = sorted(set(targets) - {n for n, _, _ in table})
    if unknown:
        raise ValueError(f"lora_targets: {unknown} are not linear layers of a "
                         f"{'BERT' if bert else 'Llama'}-style model")
    modules = tuple(module for module in table if module[0] in targets)
    label = name or str(config.get("_name_or_path") or config.get("model_type") or "model")
    return cls(name=label, lora_modules=modules, kv_heads=kv_heads, head_dim=head_dim,
               gated_mlp=not bert, head_outputs=sizes["hidden"] if bert else sizes["vocab"], **sizes)


def llama_modules(sizes: Mapping[str, int], kv_heads: int, head_dim: int) -> list[tuple[str, int, int]]:
    h, i = sizes["hidden"], sizes["intermediate"]
    q, kv = sizes["heads"] * head_dim, kv_heads * head_dim
    return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
            ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]


def bert_modules(sizes: Mapping[str, int], kv_heads: int, head_dim: int) -> list[tuple[str, int, int]]:
    # "dense" names three layers: attention output (h -> h), intermediate (h -> i), output (i -> h).
    h, i = sizes["hidden"], sizes["intermediate"]
    return [("query", h, h), ("key", h, h), ("value", h, h), ("dense", h, h), ("dense", h, i), ("dense", i, h)]


@dataclass(frozen=True)
class Workload:
    flops: float
    bytes: float


def layer_parameters(shape: ModelShape, kept_heads: int, kept_ranks: int) -> float:
    """Weights one kept layer reads: attention at the kept width, the MLP, the LoRA path."""
    width = kept_heads * shape.head_dim
    kv_width = width * shape.kv_heads / shape.heads
    attention = 2 * shape.hidden * width + 2 * shape.hidden * kv_width
    mlp = (3 if shape.gated_mlp else 2) * shape.hidden * shape.intermediate
    lora = kept_ranks * sum(d_in + d_out for _, d_in, d_out in shape.lora_modules)
    return attention + mlp + lora


def activation_width(shape: ModelShape, kept_heads: int, kept_ranks: int) -> float:
    """Values per token that one layer writes once and reads once: its input, q/k/v, the
    attention output, the residual, the MLP's hidden (gate and up for a gated MLP), its
    output and the LoRA path's rank-r intermediates."""
    width = kept_heads * shape.head_dim
    kv_width = width * shape.kv_heads / shape.heads
    mlp_hidden = (2 if shape.gated_mlp else 1) * shape.intermediate
    return 3 * shape.hidden + 2 * width + 2 * kv_width + mlp_hidden + kept_ranks * len(shape.lora_modules)


def workload(shape: ModelShape, s: Mapping[str, int]) -> Workload:
    """FLOPs and bytes moved by one forward pass of one sequence (formula: module docstring)."""
    tokens, layers, bits = s["seq_len"], s["kept_layers"], s["param_bits"]
    weights = layer_parameters(shape, s["kept_heads"], s["kept_ranks"])
    attention = 4 * tokens**2 * s["kept_heads"] * shape.head_dim
    layer_flops = 2 * tokens * weights + attention
    layer_values = weights + 2 * tokens * activation_width(shape, s["kept_heads"], s["kept_ranks"])
    head_flops = 2 * shape.hidden * shape.head_outputs
    head_values = tokens * shape.hidden + shape.hidden * shape.head_outputs
    return Workload(flops=layers * layer_flops + head_flops, bytes=(layers * layer_values + head_values) * bits / 8)


def roofline_times(spec: DeviceSpec, work: Workload, bits: int) -> tuple[float, float]:
    """(compute seconds, memory seconds) at the device's peaks."""
    return work.flops / spec.peak_flops[bits], work.bytes / spec.memory_bandwidth


def bound(spec: DeviceSpec, shape: ModelShape, s: Mapping[str, int]) -> str:
    """'compute' or 'memory': which roof limits this configuration on this device."""
    t_compute, t_memory = roofline_times(spec, workload(shape, s), s["param_bits"])
    return "compute" if t_compute >= t_memory else "memory"


def predict(spec: DeviceSpec, shape: ModelShape, s: Mapping[str, int]) -> dict[str, float]:
    """Noise-free latency_ms, energy_j and peak_power_w of one configuration."""
    t_compute, t_memory = roofline_times(spec, workload(shape, s), s["param_bits"])
    busy = max(t_compute, t_memory)
    latency = busy + s["kept_layers"] * spec.layer_overhead_s
    active = COMPUTE_POWER_SHARE * t_compute + (1 - COMPUTE_POWER_SHARE) * t_memory
    dynamic = spec.peak_w - spec.idle_w
    power = spec.idle_w + dynamic * active / latency
    peak_power = spec.idle_w + dynamic * active / busy
    return {"energy_j": power * latency, "latency_ms": latency * 1e3, "peak_power_w": peak_power}


def noise_factors(spec: DeviceSpec, rows: int, seed: int, noise: Mapping[str, float] | None) -> dict[str, np.ndarray]:
    """Multiplicative log-normal factors per metric, seeded by (seed, the device's name)."""
    unknown = sorted(set(noise or {}) - set(NOISE_SIGMAS))
    if unknown:
        raise ValueError(f"noise: {unknown} are not metrics; use {sorted(NOISE_SIGMAS)}")
    sigmas = {metric: float((noise or {}).get(metric, 0.0)) for metric in NOISE_SIGMAS}
    if any(sigma < 0 or not math.isfinite(sigma) for sigma in sigmas.values()):
        raise ValueError(f"noise sigmas must be finite and >= 0, got {sigmas}")
    rng = np.random.default_rng([int(seed), zlib.crc32(spec.name.encode())])
    draws = rng.standard_normal((rows, len(sigmas)))
    return {metric: np.exp(sigma * draws[:, k]) for k, (metric, sigma) in enumerate(sigmas.items())}


def provenance(spec: DeviceSpec, seed: int, noise: Mapping[str, float] | None) -> str:
    sigmas = ", ".join(f"{metric} {100 * sigma:g}%" for metric, sigma in (noise or {}).items()) or "none"
    return (f"SIMULATED, not measured: roofline model (wattpeft.devices.roofline) of {spec.name} from "
            f"published or derived figures ({'; '.join(spec.references)}); log-normal noise sigma "
            f"{sigmas}, seed {seed}")


def simulate(spec: DeviceSpec, shape: ModelShape, grid_rows: Sequence[Mapping[str, int]], seed: int,
             noise: Mapping[str, float] | None = NOISE_SIGMAS) -> pd.DataFrame:
    """One validated table row per configuration, `source = simulated`; `noise=None` for the
    noise-free model."""
    factors = noise_factors(spec, len(grid_rows), seed, noise)
    rows = []
    for k, s in enumerate(grid_rows):
        metrics = predict(spec, shape, s)
        noisy = {metric: value * float(factors[metric][k]) for metric, value in metrics.items()}
        rows.append({"device": spec.name, "source": SIMULATED, "model": shape.name, **dict(s), **noisy,
                     "provenance": provenance(spec, seed, noise)})
    return validate_table(pd.DataFrame(rows), f"simulated table of {spec.name}", {shape.name: shape.totals()})


__all__ = ["COMPUTE_POWER_SHARE", "DeviceSpec", "ModelShape", "NOISE_SIGMAS", "SIMULATED_DEVICES", "Workload",
           "bound", "predict", "roofline_times", "simulate", "workload"]
