"""Energy and latency profile of a repeated workload: the methodology in one function.

    meter = make_meter("auto", allow_estimate=False)
    result = profile_workload(
        lambda: model(**batch),                 # one iteration: one batch through the export
        samples_per_iter=batch_size, tokens_per_iter=int(batch["attention_mask"].sum()),
        meter=meter, warmup_iters=3, window_iters=10, repeats=3, idle_seconds=1.0,
    )
    result.to_frame().to_parquet(f"results/profiles/{device_slug(meter=meter)}/{name}.parquet")

Order of events: optional cooldown (sleep, so every profile starts from a similar
temperature) -> `warmup_iters` unmeasured iterations (allocator, kernels, clocks)
-> an idle window of `idle_seconds` with no work (idle_w = E / t, the power the
device draws anyway, measured while it is still in its working state) -> `repeats`
measured windows of `window_iters` iterations each. One window spans many counter
updates; J/sample is the window's energy divided by the samples in it, never a
per-iteration counter difference. Every iteration is also timed on its own (with a
CUDA sync after it when the meter is on CUDA) for latency percentiles; the
per-iteration sync is inside the energy window, so energy is that of synchronous,
one-batch-at-a-time serving.

Gross J/sample is what the device drew; idle-subtracted (net) J/sample removes
idle_w x window time first. Both are reported, with the energy source label, the
coefficient of variation (sample std / mean) of J/sample and of mean iteration
latency across repeats, and the device facts from `device_info`.

ProfileResult.rows: one dict per repeat with ROW_COLUMNS.
ProfileResult.summary: one dict with SUMMARY_COLUMNS.
ProfileResult.device: `device_info(meter)`.
ProfileResult.to_frame(): one row per repeat; summary and device columns repeated on each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from wattpeft.energy.backends import ESTIMATED, NAN
from wattpeft.energy.device import device_info
from wattpeft.energy.meter import EnergyMeter, Measurement

ROW_COLUMNS = (
    "repeat", "window_iters", "window_s", "energy_j", "window_flags", "window_reason",
    "samples", "tokens", "j_per_sample_gross", "j_per_sample_net", "j_per_token_gross",
    "j_per_token_net", "samples_per_s", "tokens_per_s", "peak_power_w", "mean_power_w",
    "power_samples", "latency_iter_mean_ms", "temperature_c",
)  # fmt: skip

SUMMARY_COLUMNS = (
    "source", "reason", "flags", "idle_w", "idle_s", "idle_energy_j", "idle_reason",
    "warmup_iters", "repeats", "samples_per_iter", "tokens_per_iter", "cooldown_s",
    "energy_windows_ok", "energy_j_mean", "window_s_mean",
    "j_per_sample_gross_mean", "j_per_sample_gross_std", "j_per_sample_cv",
    "j_per_sample_net_mean", "j_per_sample_net_std",
    "j_per_token_gross_mean", "j_per_token_net_mean",
    "throughput_samples_per_s", "throughput_tokens_per_s", "peak_power_w_max",
    "latency_iter_p50_ms", "latency_iter_p99_ms", "latency_sample_p50_ms", "latency_sample_p99_ms",
    "latency_cv", "latency_iters", "temperature_start_c", "temperature_end_c",
)  # fmt: skip


@dataclass
class ProfileResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    device: dict[str, Any]

    def to_frame(self):
        """pandas DataFrame: one row per repeat, summary and device facts broadcast onto each."""
        import pandas as pd

        row_keys, summary_keys, device_keys = set(self.rows[0]), set(self.summary), set(self.device)
        overlap = ((summary_keys | device_keys) & row_keys) | (summary_keys & device_keys)
        if overlap:
            raise ValueError(f"column names used twice: {sorted(overlap)}")
        return pd.DataFrame([row | self.summary | self.device for row in self.rows])


def coefficient_of_variation(values) -> float:
    """Sample standard deviation (ddof=1) over |mean|; NaN for fewer than two values or a zero mean."""
    x = np.asarray(values, dtype=float)
    if x.size < 2 or x.mean() == 0:
        return NAN
    return float(x.std(ddof=1) / abs(x.mean()))


def profile_workload(
    run_once: Callable[[], Any],
    *,
    samples_per_iter: int,
    tokens_per_iter: int,
    meter: EnergyMeter,
    warmup_iters: int,
    window_iters: int,
    repeats: int,
    idle_seconds: float,
    cooldown_seconds: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ProfileResult:
    """Profile `run_once` (one iteration = `samples_per_iter` samples, `tokens_per_iter` tokens).

    See the module docstring for the method and the columns. `sleep` is the idle and
    cooldown wait (a test passes its fake clock's). Energy numbers are NaN when the meter
    is `unavailable`; latencies and throughput are always real.
    """
    _check_arguments(samples_per_iter, tokens_per_iter, warmup_iters, window_iters, repeats, idle_seconds)
    device = device_info(meter)
    if cooldown_seconds > 0:
        sleep(cooldown_seconds)
    temperature_start = meter.temperature_c()
    for _ in range(warmup_iters):
        run_once()
    meter.synchronize()
    idle = _measure_idle(meter, idle_seconds, sleep)
    idle_w = _idle_power_w(idle, meter)
    rows, latencies = [], []
    for repeat in range(repeats):
        window, iter_latencies = _measured_window(run_once, meter, window_iters, f"repeat-{repeat}")
        latencies.append(iter_latencies)
        rows.append(_row(repeat, window, iter_latencies, idle_w, samples_per_iter, tokens_per_iter, meter))
    summary = _summary(rows, latencies, idle, idle_w, meter, device, samples_per_iter)
    summary |= {
        "warmup_iters": warmup_iters,
        "repeats": repeats,
        "samples_per_iter": samples_per_iter,
        "tokens_per_iter": tokens_per_iter,
        "cooldown_s": float(cooldown_seconds),
        "temperature_start_c": temperature_start,
    }
    return ProfileResult(rows, {k: summary[k] for k in SUMMARY_COLUMNS}, device)


def _check_arguments(samples_per_iter, tokens_per_iter, warmup_iters, window_iters, repeats, idle_seconds) -> None:
    if samples_per_iter < 1 or window_iters < 1 or repeats < 1:
        raise ValueError("samples_per_iter, window_iters and repeats must be at least 1")
    if tokens_per_iter < 0 or warmup_iters < 0 or idle_seconds < 0:
        raise ValueError("tokens_per_iter, warmup_iters and idle_seconds must not be negative")


def _measure_idle(meter: EnergyMeter, idle_seconds: float, sleep) -> Measurement | None:
    if idle_seconds == 0:
        return None
    with meter.window("idle") as idle:
        sleep(idle_seconds)
    return idle


def _idle_power_w(idle: Measurement | None, meter: EnergyMeter) -> float:
    # An estimate is tdp x time whether busy or idle: subtracting it would always give zero.
    if idle is None or meter.source == ESTIMATED:
        return NAN
    return idle.mean_power_w


def _measured_window(run_once, meter: EnergyMeter, window_iters: int, key: str) -> tuple[Measurement, list[float]]:
    latencies = []
    with meter.window(key) as window:
        for _ in range(window_iters):
            t0 = meter.clock()
            run_once()
            meter.synchronize()
            latencies.append(meter.clock() - t0)
    return window, latencies


def _row(repeat, window: Measurement, latencies, idle_w, samples_per_iter, tokens_per_iter, meter) -> dict[str, Any]:
    iters = len(latencies)
    samples, tokens = iters * samples_per_iter, iters * tokens_per_iter
    net_j = window.energy_j - idle_w * window.duration_s
    return {
        "repeat": repeat,
        "window_iters": iters,
        "window_s": window.duration_s,
        "energy_j": window.energy_j,
        "window_flags": ";".join(window.flags),
        "window_reason": window.reason,
        "samples": samples,
        "tokens": tokens,
        "j_per_sample_gross": window.energy_j / samples,
        "j_per_sample_net": net_j / samples,
        "j_per_token_gross": _ratio(window.energy_j, tokens),
        "j_per_token_net": _ratio(net_j, tokens),
        "samples_per_s": _ratio(samples, window.duration_s),
        "tokens_per_s": _ratio(tokens, window.duration_s),
        "peak_power_w": window.peak_power_w,
        "mean_power_w": window.mean_power_w,
        "power_samples": window.power_samples,
        "latency_iter_mean_ms": 1000.0 * float(np.mean(latencies)),
        "temperature_c": meter.temperature_c(),
    }


def _summary(rows, latencies, idle, idle_w, meter, device, samples_per_iter) -> dict[str, Any]:
    col = lambda name: np.array([r[name] for r in rows], dtype=float)  # noqa: E731
    iter_ms = 1000.0 * np.concatenate([np.asarray(x, dtype=float) for x in latencies])
    sample_ms = iter_ms / samples_per_iter
    total_s = col("window_s").sum()
    return {
        "source": meter.source,
        "reason": meter.reason,
        "flags": ";".join(_profile_flags(rows, device)),
        "idle_w": idle_w,
        "idle_s": NAN if idle is None else idle.duration_s,
        "idle_energy_j": NAN if idle is None else idle.energy_j,
        "idle_reason": _idle_reason(idle, meter),
        "energy_windows_ok": int(np.isfinite(col("energy_j")).sum()),
        "energy_j_mean": float(col("energy_j").mean()),
        "window_s_mean": float(col("window_s").mean()),
        "j_per_sample_gross_mean": float(col("j_per_sample_gross").mean()),
        "j_per_sample_gross_std": _std(col("j_per_sample_gross")),
        "j_per_sample_cv": coefficient_of_variation(col("j_per_sample_gross")),
        "j_per_sample_net_mean": float(col("j_per_sample_net").mean()),
        "j_per_sample_net_std": _std(col("j_per_sample_net")),
        "j_per_token_gross_mean": float(col("j_per_token_gross").mean()),
        "j_per_token_net_mean": float(col("j_per_token_net").mean()),
        "throughput_samples_per_s": _ratio(col("samples").sum(), total_s),
        "throughput_tokens_per_s": _ratio(col("tokens").sum(), total_s),
        "peak_power_w_max": _nanmax(col("peak_power_w")),
        "latency_iter_p50_ms": float(np.percentile(iter_ms, 50)),
        "latency_iter_p99_ms": float(np.percentile(iter_ms, 99)),
        "latency_sample_p50_ms": float(np.percentile(sample_ms, 50)),
        "latency_sample_p99_ms": float(np.percentile(sample_ms, 99)),
        "latency_cv": coefficient_of_variation(col("latency_iter_mean_ms")),
        "latency_iters": int(iter_ms.size),
        "temperature_end_c": meter.temperature_c(),
    }


def _profile_flags(rows, device) -> list[str]:
    flags = sorted({f for r in rows for f in r["window_flags"].split(";") if f})
    if device.get("mig_enabled"):
        flags.append("mig_enabled")
    if (device.get("gpu_compute_processes") or 0) > 1:
        flags.append("shared_gpu")
    return flags


def _idle_reason(idle: Measurement | None, meter: EnergyMeter) -> str | None:
    if idle is None:
        return "idle_seconds=0: no idle baseline, net energy is NaN"
    if meter.source == ESTIMATED:
        return "an estimate has no idle baseline, net energy is NaN"
    return idle.reason


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator > 0 else NAN


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if x.size > 1 else NAN


def _nanmax(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.max()) if finite.size else NAN
