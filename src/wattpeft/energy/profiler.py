"""Energy and latency profile of a repeated workload: the methodology in one function.

    meter = make_meter("auto", allow_estimate=False)
    result = profile_workload(
        lambda: model(**batch),                 # one iteration: one batch through the export
        samples_per_iter=batch_size, tokens_per_iter=int(batch["attention_mask"].sum()),
        meter=meter, warmup_iters=3, window_iters=10, repeats=3, idle_seconds=1.0,
        min_window_s=1.0, min_counter_updates=10, max_window_s=60.0,
    )
    result.to_frame().to_parquet(f"results/profiles/{device_slug(meter=meter)}/{name}.parquet")

Order of events: optional cooldown (sleep, so every profile starts from a similar
temperature) -> `warmup_iters` unmeasured iterations (allocator, kernels, clocks)
-> an idle window of `idle_seconds` with no work (idle_w = E / t, the power the
device draws anyway, measured while it is still in its working state) -> `repeats`
measured windows.

Minimum window rule: a measured window runs `window_iters` iterations, then keeps
adding whole iterations until it lasts at least `min_window_s` and, for a source
with a cumulative counter (nvml_counter, rapl), the counter has changed at least
`min_counter_updates` times inside it (read after every iteration with
`meter.observe`). A counter moves in steps, so a window spanning N of them is off
by about 1/N of its energy. If `max_window_s` comes first, the window's energy
is NaN, flagged `too_few_counter_updates`. J/sample is a window's energy over the
samples in it, never a per-iteration counter difference. Each row records the
window's actual `window_iters` and `counter_updates`.

Every iteration is also timed on its own (with a CUDA sync after it when the
meter is on CUDA); the per-iteration sync is inside the energy window, so energy
is that of synchronous, one-batch-at-a-time serving.

Gross J/sample is what the device drew; idle-subtracted (net) J/sample removes
idle_w x window time first. Energy means, standard deviations and the coefficient
of variation (sample std / mean) are over the valid (finite-energy) windows only
(`energy_windows_valid` of `energy_windows_total`; NaN when none is valid).
Timing is real in every window: `throughput_*` and `ms_per_sample` (1000 /
samples per second, the time cost of one sample in a batch, not a latency) come
from all windows, and so do the `batch_latency_*` percentiles of one iteration
(one batch), from `wattpeft.utils.latency` (a percentile is NaN until enough
iterations were timed: p99 needs 100). `latency_cv` is the CV of the mean batch
latency across repeats.

ProfileResult.rows: one dict per repeat with ROW_COLUMNS.
ProfileResult.summary: one dict with SUMMARY_COLUMNS.
ProfileResult.device: `device_info(meter)`.
ProfileResult.to_frame(): one row per repeat; summary and device columns repeated on each.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from wattpeft.energy.backends import ESTIMATED, NAN, TOO_FEW_COUNTER_UPDATES
from wattpeft.energy.device import device_info
from wattpeft.energy.meter import EnergyMeter, Measurement
from wattpeft.utils.latency import latency_percentiles

ROW_COLUMNS = (
    "repeat", "window_iters", "window_s", "counter_updates", "energy_j", "window_flags",
    "window_reason", "samples", "tokens", "j_per_sample_gross", "j_per_sample_net",
    "j_per_token_gross", "j_per_token_net", "samples_per_s", "tokens_per_s", "peak_power_w",
    "mean_power_w", "power_samples", "window_batch_latency_mean_ms", "temperature_c",
)  # fmt: skip

SUMMARY_COLUMNS = (
    "source", "reason", "flags", "idle_w", "idle_s", "idle_energy_j", "idle_reason",
    "warmup_iters", "repeats", "samples_per_iter", "tokens_per_iter", "cooldown_s",
    "min_window_s", "min_counter_updates", "max_window_s",
    "energy_windows_valid", "energy_windows_total", "energy_j_mean", "window_s_mean",
    "j_per_sample_gross_mean", "j_per_sample_gross_std", "j_per_sample_cv",
    "j_per_sample_net_mean", "j_per_sample_net_std",
    "j_per_token_gross_mean", "j_per_token_net_mean",
    "throughput_samples_per_s", "throughput_tokens_per_s", "ms_per_sample", "peak_power_w_max",
    "batch_latency_p50_ms", "batch_latency_p90_ms", "batch_latency_p95_ms", "batch_latency_p99_ms",
    "batch_latency_mean_ms", "batch_latency_n", "batch_latency_tail_pct", "batch_latency_tail_ms",
    "latency_cv", "temperature_start_c", "temperature_end_c",
)  # fmt: skip


@dataclass(frozen=True)
class WindowRule:
    """When a measured window is long enough to stop growing, and when its energy is too coarse to keep."""

    min_s: float
    min_updates: int
    max_s: float

    def __post_init__(self) -> None:
        if self.min_s < 0 or self.min_updates < 0:
            raise ValueError("min_window_s and min_counter_updates must not be negative")
        if self.max_s < self.min_s:
            raise ValueError(f"max_window_s ({self.max_s}) must be at least min_window_s ({self.min_s})")

    def done(self, elapsed_s: float, updates: int | None) -> bool:
        """After `window_iters`: stop adding iterations? (updates is None: the source has no counter.)"""
        enough = elapsed_s >= self.min_s and (updates is None or updates >= self.min_updates)
        return enough or elapsed_s >= self.max_s

    def judge(self, window: Measurement) -> Measurement:
        """The window, with NaN energy if its counter changed too rarely for the steps to be negligible."""
        if window.counter_updates is None or window.counter_updates >= self.min_updates:
            return window
        why = (
            f"energy counter changed {window.counter_updates} times in {window.duration_s:.2f} s, fewer than "
            f"min_counter_updates={self.min_updates} (windows stop growing at max_window_s={self.max_s:g})"
        )
        return dataclasses.replace(
            window,
            energy_j=NAN,
            flags=window.flags + (TOO_FEW_COUNTER_UPDATES,),
            reason=why if window.reason is None else f"{window.reason}; {why}",
        )


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
    min_window_s: float = 1.0,
    min_counter_updates: int = 10,
    max_window_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ProfileResult:
    """Profile `run_once` (one iteration = `samples_per_iter` samples, `tokens_per_iter` tokens).

    See the module docstring for the method (the minimum window rule included) and
    the columns. `sleep` is the idle and cooldown wait (a test passes its fake
    clock's). Energy numbers are NaN when the meter is `unavailable`; latencies and
    throughput are always real.
    """
    _check_arguments(samples_per_iter, tokens_per_iter, warmup_iters, window_iters, repeats, idle_seconds)
    rule = WindowRule(min_window_s, min_counter_updates, max_window_s)
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
        window, iter_latencies = _measured_window(run_once, meter, window_iters, rule, f"repeat-{repeat}")
        latencies.extend(iter_latencies)
        rows.append(_row(repeat, window, iter_latencies, idle_w, samples_per_iter, tokens_per_iter, meter))
    summary = _summary(rows, latencies, idle, idle_w, meter, device)
    summary |= {
        "warmup_iters": warmup_iters,
        "repeats": repeats,
        "samples_per_iter": samples_per_iter,
        "tokens_per_iter": tokens_per_iter,
        "cooldown_s": float(cooldown_seconds),
        "min_window_s": float(min_window_s),
        "min_counter_updates": int(min_counter_updates),
        "max_window_s": float(max_window_s),
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


def _measured_window(run_once, meter: EnergyMeter, window_iters: int, rule: WindowRule, key: str):
    """(window, per-iteration seconds): `window_iters` iterations, then more until `rule` is done."""
    latencies: list[float] = []
    meter.begin_window(key)
    try:
        while True:
            latencies.append(_timed_iteration(run_once, meter))
            updates = meter.observe(key)
            if len(latencies) >= window_iters and rule.done(meter.elapsed_s(key), updates):
                break
    finally:  # close the window (and its polling thread) even when run_once raises
        window = meter.end_window(key)
    return rule.judge(window), latencies


def _timed_iteration(run_once, meter: EnergyMeter) -> float:
    t0 = meter.clock()
    run_once()
    meter.synchronize()
    return meter.clock() - t0


def _row(repeat, window: Measurement, latencies, idle_w, samples_per_iter, tokens_per_iter, meter) -> dict[str, Any]:
    iters = len(latencies)
    samples, tokens = iters * samples_per_iter, iters * tokens_per_iter
    net_j = window.energy_j - idle_w * window.duration_s
    return {
        "repeat": repeat,
        "window_iters": iters,
        "window_s": window.duration_s,
        "counter_updates": window.counter_updates,
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
        "window_batch_latency_mean_ms": 1000.0 * float(np.mean(latencies)),
        "temperature_c": meter.temperature_c(),
    }


def _summary(rows, latencies, idle, idle_w, meter, device) -> dict[str, Any]:
    col = lambda name: np.array([r[name] for r in rows], dtype=float)  # noqa: E731
    # Energy statistics over the valid windows only: one NaN window would poison every mean.
    valid = np.isfinite(col("energy_j"))
    energy = lambda name: col(name)[valid]  # noqa: E731
    samples_per_s = _ratio(col("samples").sum(), col("window_s").sum())
    return {
        "source": meter.source,
        "reason": meter.reason,
        "flags": ";".join(_profile_flags(rows, device)),
        "idle_w": idle_w,
        "idle_s": NAN if idle is None else idle.duration_s,
        "idle_energy_j": NAN if idle is None else idle.energy_j,
        "idle_reason": _idle_reason(idle, meter),
        "energy_windows_valid": int(valid.sum()),
        "energy_windows_total": len(rows),
        "energy_j_mean": _mean(energy("energy_j")),
        "window_s_mean": _mean(col("window_s")),
        "j_per_sample_gross_mean": _mean(energy("j_per_sample_gross")),
        "j_per_sample_gross_std": _std(energy("j_per_sample_gross")),
        "j_per_sample_cv": coefficient_of_variation(energy("j_per_sample_gross")),
        "j_per_sample_net_mean": _mean(energy("j_per_sample_net")),
        "j_per_sample_net_std": _std(energy("j_per_sample_net")),
        "j_per_token_gross_mean": _mean(energy("j_per_token_gross")),
        "j_per_token_net_mean": _mean(energy("j_per_token_net")),
        "throughput_samples_per_s": samples_per_s,
        "throughput_tokens_per_s": _ratio(col("tokens").sum(), col("window_s").sum()),
        "ms_per_sample": _ratio(1000.0, samples_per_s),
        "peak_power_w_max": _nanmax(col("peak_power_w")),
        "latency_cv": coefficient_of_variation(col("window_batch_latency_mean_ms")),
        "temperature_end_c": meter.temperature_c(),
    } | latency_percentiles(latencies, prefix="batch_latency")


def _profile_flags(rows, device) -> list[str]:
    flags = {f for r in rows for f in r["window_flags"].split(";") if f}
    if device.get("mig_enabled"):
        flags.add("mig_enabled")
    if (device.get("gpu_compute_processes") or 0) > 1:
        flags.add("shared_gpu")
    return sorted(flags)


def _idle_reason(idle: Measurement | None, meter: EnergyMeter) -> str | None:
    if idle is None:
        return "idle_seconds=0: no idle baseline, net energy is NaN"
    if meter.source == ESTIMATED:
        return "an estimate has no idle baseline, net energy is NaN"
    return idle.reason


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator > 0 else NAN


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else NAN


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if x.size > 1 else NAN


def _nanmax(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.max()) if finite.size else NAN
