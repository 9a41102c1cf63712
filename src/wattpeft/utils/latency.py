"""Latency percentiles that mean what they say.

A p-th percentile needs at least 100 / (100 - p) timed passes before the sample has a
value beyond it: p99 needs 100, p95 needs 20, p90 needs 10. With fewer, that percentile
is NaN (null in JSON) and `{prefix}_tail_pct` names the highest percentile the sample
does support, so a reader never takes the maximum of 32 passes for a p99.

Kept free of torch and of the evaluation stack: the energy profiler uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def min_passes(percentile: float) -> int:
    """The fewest timed passes for which `percentile` is more than the sample maximum."""
    return math.ceil(100.0 / (100.0 - percentile) - 1e-9)


def latency_percentiles(seconds: Sequence[float], prefix: str = "latency") -> dict[str, float | int]:
    """{prefix}_p50/p90/p95/p99_ms (NaN where the sample is too small), mean, n and tail.

    `{prefix}_tail_pct` is the highest of PERCENTILES the sample supports (NaN below 2
    passes) and `{prefix}_tail_ms` its value.
    """
    if len(seconds) == 0:
        raise ValueError("seconds is empty: no latency samples were timed")
    values_ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not np.all(np.isfinite(values_ms)) or np.any(values_ms < 0):
        raise ValueError("latencies must be finite and non-negative")
    n = int(values_ms.size)
    out: dict[str, float | int] = {}
    tail_pct, tail_ms = math.nan, math.nan
    for pct in PERCENTILES:
        if n >= min_passes(pct):
            value = float(np.percentile(values_ms, pct, method="linear"))
            tail_pct, tail_ms = float(pct), value
        else:
            value = math.nan
        out[f"{prefix}_p{pct}_ms"] = value
    out[f"{prefix}_mean_ms"] = float(values_ms.mean())
    out[f"{prefix}_n"] = n
    out[f"{prefix}_tail_pct"] = tail_pct
    out[f"{prefix}_tail_ms"] = tail_ms
    return out
