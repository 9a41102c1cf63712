"""Which mixed precision a device gets: bf16 where it has it, never fp16 on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """Map the config's choice to accelerate's: 'no' or 'bf16' or 'fp16'."""
    on_cuda = device.type == "cuda"
    if requested == "fp16" and not on_cuda:
        raise ValueError(
            "training.mixed_precision: fp16 is refused on a CPU (about 2,000x slower than bf16 "
            "there); use bf16, no or auto"
        )
    if requested != "auto":
        return requested
    if on_cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "no"
