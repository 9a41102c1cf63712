"""What machine a profile came from: logged facts (`device_info`) and a path-safe name (`device_slug`)."""

from __future__ import annotations

import logging
import os
import platform
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")

# Marketing words that do not tell two CPU models apart.
_CPU_NOISE = re.compile(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|\b\d+-core\b", re.IGNORECASE)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model_name(cpuinfo: str | Path = CPUINFO) -> str:
    """The CPU's model string ("model name" on x86, "Model"/"Hardware" on ARM boards)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for field in ("model name", "Model", "Hardware"):
        match = re.search(rf"^{field}\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_slug(model: str) -> str:
    """'AMD EPYC 9B14 96-Core Processor' -> 'cpu-amd-epyc-9b14'."""
    return "cpu-" + slugify(_CPU_NOISE.sub(" ", model))


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'gpu-nvidia-h100-80gb-hbm3'."""
    return "gpu-" + slugify(name)


def device_slug(device: str = "auto", meter=None, cpuinfo: str | Path = CPUINFO) -> str:
    """A short stable name for this machine's accelerator (or CPU), for results/profiles/{device}/.

    The GPU name comes from the meter's NVML backend when there is one, else from torch.
    """
    from wattpeft.energy.meter import resolve_device

    target = meter.device if meter is not None else resolve_device(device)
    if target.startswith("cuda"):
        name = _gpu_name(meter, target)
        if name:
            return gpu_slug(name)
        log.warning("no GPU name for %s (no NVML, no CUDA); naming the profile after the CPU", target)
    return cpu_slug(cpu_model_name(cpuinfo))


def device_info(meter=None, cpuinfo: str | Path = CPUINFO) -> dict[str, Any]:
    """Host and accelerator facts to store next to every profile; warns on MIG and shared GPUs."""
    import torch

    from wattpeft.energy.meter import resolve_device

    info: dict[str, Any] = {
        "device_slug": device_slug(meter=meter, cpuinfo=cpuinfo),
        "torch_device": meter.device if meter is not None else resolve_device("auto"),
        "cpu_model": cpu_model_name(cpuinfo),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "energy_source": meter.source if meter is not None else None,
        "energy_reason": meter.reason if meter is not None else None,
    }
    if meter is not None:
        info |= meter.backend.info()
    _warn_on_shared_gpu(info)
    return info


def _gpu_name(meter, target: str) -> str | None:
    if meter is not None:
        name = meter.backend.info().get("gpu_name")
        if name:
            return name
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(target)
    return None


def _warn_on_shared_gpu(info: dict[str, Any]) -> None:
    if info.get("mig_enabled"):
        log.warning("MIG is enabled on %s: NVML energy is for the whole GPU, not this instance", info.get("gpu_name"))
    if (info.get("gpu_compute_processes") or 0) > 1:
        log.warning(
            "%d compute processes on %s: another job may share the GPU and its energy",
            info["gpu_compute_processes"],
            info.get("gpu_name"),
        )
