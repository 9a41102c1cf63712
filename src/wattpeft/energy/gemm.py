"""Joules per FLOP of int8 and bf16 GEMMs: the per-device constants behind HEST's E_dir(i, state).

One call times `iters` back-to-back GEMMs of (m x k) @ (k x n) inside one meter
window (after `warmup` unmeasured ones), so the window spans many counter updates.
FLOPs are counted as 2 m k n per GEMM (a multiply and an add), for int8 as for bf16.
With an `unavailable` meter the energy is NaN but the time per FLOP is real.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from wattpeft.energy.backends import NAN
from wattpeft.energy.meter import EnergyMeter
from wattpeft.energy.table import MEASURE_SHAPE, default_table

DTYPES = ("int8", "bf16")


def gemm_flops(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def check_int8_shape(m: int, k: int, n: int, device: torch.device) -> None:
    """torch._int_mm on CUDA needs M > 16 and K, N multiples of 8."""
    if device.type == "cuda" and not (m > 16 and k % 8 == 0 and n % 8 == 0):
        raise ValueError(f"int8 GEMM on CUDA needs m > 16 and k, n multiples of 8; got m={m}, k={k}, n={n}")


def measure_joules_per_flop(
    meter: EnergyMeter,
    dtype: str,
    m: int,
    k: int,
    n: int,
    iters: int,
    *,
    device: str | None = None,
    warmup: int = 3,
    idle_w: float = NAN,
    seed: int = 0,
) -> dict[str, Any]:
    """Energy and time per FLOP of `iters` GEMMs on `device` (default: the meter's device).

    Returns the shape, dtype, device, flops, seconds, s_per_flop, flops_per_s, energy_j,
    j_per_flop (gross), j_per_flop_net (idle_w x seconds removed; NaN unless idle_w is
    given), and the meter's source, reason, flags and peak_power_w for the window.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if iters < 1:
        raise ValueError("iters must be at least 1")
    target = torch.device(device or meter.device)
    gemm = _gemm(dtype, m, k, n, target, seed)
    with torch.inference_mode():
        for _ in range(warmup):
            gemm()
        _sync(target)
        with meter.window(f"gemm-{dtype}-{m}x{k}x{n}") as window:
            for _ in range(iters):
                gemm()
            _sync(target)
    return _result(window, dtype, m, k, n, iters, target, idle_w)


def measure_energy_table(meter, iters: int = 20) -> dict[str, Any]:
    """Time (and, with a counter, the energy of) int8 and bf16 GEMMs through `meter`.

    Energy per FLOP is `measured` only when both windows give a finite energy; otherwise the
    defaults are used and the measured times per FLOP are kept beside them."""
    rows = {dtype: measure_joules_per_flop(meter, dtype, iters=iters, **MEASURE_SHAPE) for dtype in ("int8", "bf16")}
    timing = {"int8": rows["int8"]["s_per_flop"], "16bit": rows["bf16"]["s_per_flop"]}
    energies = {"int8": rows["int8"]["j_per_flop"], "16bit": rows["bf16"]["j_per_flop"]}
    if all(math.isfinite(v) and v > 0 for v in energies.values()):
        table = {"j_per_flop": energies, "source": "measured", "reference": f"measured by {rows['bf16']['source']}",
                 "reason": None}
    else:
        table = default_table(rows["bf16"].get("reason") or "the meter gave no energy")
    table.update(s_per_flop_measured=timing, gemm_shape=dict(MEASURE_SHAPE), device=rows["bf16"]["device"],
                 meter_source=rows["bf16"]["source"])
    return table



def _gemm(dtype: str, m: int, k: int, n: int, device: torch.device, seed: int):
    generator = torch.Generator().manual_seed(seed)
    if dtype == "int8":
        check_int8_shape(m, k, n, device)
        a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=generator).to(device)
        b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=generator).to(device)
        out = torch.empty(m, n, dtype=torch.int32, device=device)
        return lambda: torch._int_mm(a, b, out=out)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=torch.bfloat16)
    out = torch.empty(m, n, dtype=torch.bfloat16, device=device)
    return lambda: torch.mm(a, b, out=out)


def _sync(device: torch.device) -> None:
    # The meter syncs its own device; this also covers a GEMM device the meter does not know.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _result(window, dtype, m, k, n, iters, device, idle_w) -> dict[str, Any]:
    flops = gemm_flops(m, k, n) * iters
    seconds = window.duration_s
    net_j = window.energy_j - idle_w * seconds if math.isfinite(idle_w) else NAN
    return {
        "dtype": dtype,
        "m": m,
        "k": k,
        "n": n,
        "iters": iters,
        "device": str(device),
        "flops": flops,
        "seconds": seconds,
        "s_per_flop": seconds / flops,
        "flops_per_s": flops / seconds if seconds > 0 else NAN,
        "energy_j": window.energy_j,
        "j_per_flop": window.energy_j / flops,
        "j_per_flop_net": net_j / flops,
        "idle_w": idle_w,
        "source": window.source,
        "reason": window.reason,
        "flags": ";".join(window.flags),
        "peak_power_w": window.peak_power_w,
    }
