"""Modelled energy of a hardened export: what the energy table (energy/table.py) says its
forward passes cost. A model, not a measurement: every output names the table's source.

Backbone: 2 FLOPs per weight of each linear layer per token (attention scores and
element-wise work left out), priced at the 16-bit J/FLOP. Adapter path: what the method's
hardened layers report (`inference_stats`: gated spectral directions); a merged adapter adds
nothing. The adapter's share of a forward pass's FLOPs with every direction on bounds what
any gate on it can save.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

ENERGY_ROWS = 32  # test inputs (batch 1, prefill) in the energy pass


def modelled_energy(model, method_cls, sequences: Sequence[Sequence[int]], table: dict[str, Any],
                    backbone_flops_per_token: float, device: torch.device, long_tokens: int = 0) -> dict[str, Any]:
    """{"metrics": {...}, "gate_utilisation": {...} or None} from one prefill pass per input
    over the first ENERGY_ROWS `sequences`, plus, when `long_tokens` > 0 and the method gates
    anything, one long input of that many tokens (the inputs concatenated): the longest
    sequence the cap must hold on."""
    sequences = [list(s) for s in sequences[:ENERGY_ROWS] if len(s)]
    if not sequences:
        raise ValueError("no input to model the energy of")
    # One pass says whether the export gates anything; a merged adapter adds no work at
    # inference, and its modelled energy needs no further passes (only the token counts).
    stats = _pass(model, method_cls, sequences[:1], device)
    if stats:
        stats = _pass(model, method_cls, sequences, device)
    tokens = sum(map(len, sequences)) / len(sequences)
    j16 = float(table["j_per_flop"]["16bit"])
    adapter_j = float(stats.get("modelled_adapter_j_per_sample", 0.0))
    adapter_fpt = float(stats.get("adapter_flops_per_token", 0.0))
    adapter_fpt_max = float(stats.get("adapter_flops_per_token_max", 0.0))
    metrics: dict[str, Any] = {
        "modelled_j_per_sample": tokens * backbone_flops_per_token * j16 + adapter_j,
        "modelled_adapter_j_per_sample": adapter_j,
        "modelled_adapter_j_max_sample": float(stats.get("modelled_adapter_j_max_sample", 0.0)),
        "adapter_flop_share": adapter_fpt / (backbone_flops_per_token + adapter_fpt),
        "adapter_flop_share_max": adapter_fpt_max / (backbone_flops_per_token + adapter_fpt_max),
        "modelled_tokens_per_sample": tokens,
        "e_max_j": stats.get("e_max_j"),
    }
    if long_tokens > 0 and stats:
        long_input = _long_input(sequences, long_tokens)
        long_stats = _pass(model, method_cls, [long_input], device)
        metrics["modelled_adapter_j_long_sample"] = float(long_stats.get("modelled_adapter_j_per_sample", 0.0))
        metrics["long_sample_tokens"] = len(long_input)
    e_max = metrics["e_max_j"]
    if e_max:
        worst = max(metrics["modelled_adapter_j_max_sample"], metrics.get("modelled_adapter_j_long_sample", 0.0))
        metrics["e_max_worst_ratio"] = worst / e_max  # <= 1: the cap held on every input
    return {"metrics": metrics, "gate_utilisation": stats.get("gate_utilisation")}


def _pass(model, method_cls, sequences, device) -> dict[str, Any]:
    method_cls.reset_inference_stats(model)
    with torch.inference_mode():
        for sequence in sequences:
            ids = torch.tensor([sequence], device=device)
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return method_cls.inference_stats(model)


def _long_input(sequences, n_tokens: int) -> list[int]:
    out: list[int] = []
    while len(out) < n_tokens:
        for sequence in sequences:
            out.extend(sequence)
    return out[:n_tokens]


def backbone_linear_flops_per_token(model) -> int:
    """2 x the weights of every linear layer of a plain backbone (before any adapter)."""
    from torch import nn

    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
