"""Profiling stage: energy and latency of one hardened export on this device.

The workload is a forward pass over a fixed batch of test inputs (prefill, no
generation), repeated in long measurement windows; see wattpeft.energy.profiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..utils.io import atomic_path, json_safe
from .common import RunData, open_run_data, pin_threads

WORKLOAD = "forward pass over a fixed batch of test inputs (prefill, no generation)"

# Summary columns of a profile, under the names metrics.json uses. A batch's latency and the
# time per sample at that batch (batch time / batch size: inverse throughput) differ, and
# so do their names.
SUMMARY_FIELDS = {
    "energy_j_per_sample": "j_per_sample_gross_mean",
    "energy_j_per_sample_net": "j_per_sample_net_mean",
    "energy_cv": "j_per_sample_cv",
    "idle_power_w": "idle_w",
    "peak_power_w": "peak_power_w_max",
    "tokens_per_s": "throughput_tokens_per_s",
    "samples_per_s": "throughput_samples_per_s",
    "profile_ms_per_sample": "ms_per_sample",
    "profile_batch_latency_p50_ms": "batch_latency_p50_ms",
    "profile_batch_latency_p99_ms": "batch_latency_p99_ms",
    "profile_batch_latency_tail_pct": "batch_latency_tail_pct",
    "profile_batch_latency_tail_ms": "batch_latency_tail_ms",
    "profile_batch_latency_n": "batch_latency_n",
    "latency_cv": "latency_cv",
    "energy_source": "source",
    "energy_reason": "reason",
    "energy_windows_valid": "energy_windows_valid",
    "energy_windows_total": "energy_windows_total",
    "device": "device_slug",
}
# Fields that describe how a number was obtained rather than being one.
PROFILE_PROVENANCE = ("energy_source", "energy_reason", "energy_windows_valid", "energy_windows_total", "device")


def fixed_batch(data: RunData, batch_size: int) -> dict[str, Any]:
    """The first `batch_size` test inputs, padded as in training (inputs only: no labels)."""
    from ..data.loading import make_collator

    test = data.split("test")
    batch = make_collator(data.task, data.manifest["pad_token_id"])([test[i] for i in range(min(batch_size, len(test)))])
    batch.pop("labels")
    return batch


def run_profile(export_dir: Path, data_dir: Path, profiling: dict[str, Any], device_label: str, out_path: Path, threads: int = 1) -> pd.DataFrame:
    """Profile one export on the device this job runs on. `device_label` is the configured
    profiling.device ("auto" or a chosen name); the device found here is recorded beside it
    (`device_slug`, GPU or CPU name), so a profile made on a cluster node names that node's GPU."""
    import torch

    from ..energy.meter import make_meter
    from ..energy.profiler import profile_workload

    pin_threads(threads)
    data = open_run_data(data_dir)
    _, model = data.load_export(export_dir)
    meter = make_meter("auto", allow_estimate=profiling["energy_estimate"], tdp_watts=profiling.get("tdp_watts"))
    device = torch.device(meter.device)
    model.to(device).eval()
    batch = {k: v.to(device) for k, v in fixed_batch(data, profiling["batch_size"]).items()}

    @torch.inference_mode()
    def run_once() -> None:
        model(**batch)

    result = profile_workload(
        run_once,
        samples_per_iter=int(batch["input_ids"].shape[0]),
        tokens_per_iter=int(batch["attention_mask"].sum()),
        meter=meter,
        warmup_iters=profiling["warmup_iters"],
        window_iters=profiling["window_iters"],
        repeats=profiling["repeats"],
        idle_seconds=profiling["idle_seconds"],
        min_window_s=profiling["min_window_s"],
        min_counter_updates=profiling["min_counter_updates"],
        max_window_s=profiling["max_window_s"],
    )
    frame = result.to_frame()
    frame["run_id"] = Path(export_dir).name
    frame["profile_label"] = device_label
    frame["workload"] = WORKLOAD
    frame["threads"] = threads
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    meter.close()
    return frame


def profile_summary(path: Path) -> dict[str, Any]:
    """One profile's summary under metrics.json names; NaN energy becomes None (unavailable)."""
    frame = pd.read_parquet(path)
    first = frame.iloc[0]
    summary = {name: json_safe(first[col]) for name, col in SUMMARY_FIELDS.items() if col in frame}
    summary["energy_flags"] = [f for f in str(first.get("flags") or "").split(";") if f]
    summary["profile_label"] = str(first["profile_label"])
    summary["device_name"] = json_safe(first.get("gpu_name")) or json_safe(first.get("cpu_model"))
    summary["workload"] = str(first["workload"])
    return summary
