"""What an export costs on a hardware-surrogate family's unseen device (seed 002).

The configuration s of an export is read from the exported model itself, not from what its
method says: blocks in the model, attention heads per block (rows of the query projection
over the head size) and adapter rank per adapted module (rows of each `lora_A`; 0 when the
adapter was merged). Sequence length and weight width are the family's deployment setting
(`surrogate.seq_len`, `surrogate.param_bits`), not the export's storage width: the
methods optimised their cost there. The unseen device cannot be reached from here:
where it is a simulated device, its cost is the roofline model's (noise-free) prediction for
s, labelled `simulated`; otherwise the cost is unavailable, with the reason.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..devices.catalogue import SIMULATED_DEVICES
from ..methods.pruning import block_list, heads_per_block

def deployed_configuration(model: nn.Module, seq_len: int, param_bits: int) -> dict[str, Any]:
    """s of the model as exported, at the family's deployment sequence length and width."""
    blocks = block_list(model)
    heads = heads_per_block(model)
    ranks = [p.shape[0] for name, p in model.named_parameters() if "lora_A" in name and p.dim() == 2]
    return {
        "seq_len": int(seq_len),
        "kept_layers": len(blocks),
        "kept_heads": sum(heads) / len(heads) if heads else 0.0,
        "kept_ranks": sum(ranks) / len(ranks) if ranks else 0.0,
        "param_bits": int(param_bits),
    }


def unseen_device_cost(device: str, shape, s: dict[str, Any]) -> dict[str, Any]:
    """Energy, latency and peak power of s on `device`, with their source."""
    from ..devices.roofline import predict

    if device not in SIMULATED_DEVICES:
        reason = f"{device} is not a simulated device and cannot be reached from the evaluation job"
        return {"source": "unavailable", "reason": reason,
                "energy_j": math.nan, "latency_ms": math.nan, "peak_power_w": math.nan}
    return {"source": "simulated", "reason": "roofline model of published figures (devices/roofline.py)",
            **predict(SIMULATED_DEVICES[device], shape, s)}
