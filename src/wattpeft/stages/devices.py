"""Device-profile stages (hardware-surrogate families, seed 002): one table of the family's
backbone cost per configuration s on every device (docs/devices.md). Simulated rows come
from the roofline model, imported rows from a CSV measured elsewhere, measured rows from
this machine through the energy meter; every row says which (`source`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..devices.grid import configuration_grid
from ..devices.roofline import SIMULATED_DEVICES, ModelShape
from ..devices.table import read_imported_csv, read_table, validate_table, write_table


def model_shape(model_dir: str | Path, model_name: str, lora_targets: list[str] | None) -> ModelShape:
    """The backbone's shape, from its config (the asset folder, or the hub id it points at)."""
    from transformers import AutoConfig

    from .common import model_source

    config = AutoConfig.from_pretrained(model_source(model_dir)).to_dict()
    return ModelShape.from_hf_config(config, name=model_name, lora_targets=lora_targets)


def run_device_simulate(device: str, devices_cfg: dict[str, Any], model_dir: Path, model_name: str,
                        out_path: Path) -> pd.DataFrame:
    """`device`'s rows from the roofline model of its published figures, labelled simulated."""
    from ..devices.roofline import simulate

    if device not in SIMULATED_DEVICES:
        raise KeyError(f"devices.simulate: unknown device {device!r}; known: {sorted(SIMULATED_DEVICES)}")
    shape = model_shape(model_dir, model_name, devices_cfg.get("adapted_modules"))
    grid = configuration_grid(shape, devices_cfg["grid"], where="devices.grid")
    table = simulate(SIMULATED_DEVICES[device], shape, grid, seed=devices_cfg.get("seed", 0))
    return write_table(table, out_path, {shape.name: shape.totals()})


def run_device_import(device: str, csv_path: Path, devices_cfg: dict[str, Any], model_dir: Path, model_name: str,
                      out_path: Path) -> pd.DataFrame:
    """A CSV that a user measured elsewhere, validated (errors name the row and column)."""
    shape = model_shape(model_dir, model_name, devices_cfg.get("adapted_modules"))
    totals = {shape.name: shape.totals()}
    return write_table(read_imported_csv(csv_path, device=device, totals=totals), out_path, totals)


def run_device_table(parts: list[Path], out_path: Path) -> pd.DataFrame:
    """Every device's rows in one table; a device may appear in one part only."""
    frames = [read_table(path) for path in parts]
    seen: dict[str, Path] = {}
    for path, frame in zip(parts, frames):
        for device in frame["device"].unique():
            if device in seen:
                raise ValueError(f"device {device!r} is in both {seen[device]} and {path}: give each source its own name")
            seen[device] = path
    table = validate_table(pd.concat(frames, ignore_index=True), "the family's device table")
    return write_table(table, out_path)


def run_device_measure(device_label: str, devices_cfg: dict[str, Any], model_dir: Path, model_name: str,
                       profiling: dict[str, Any], out_path: Path, threads: int = 1) -> pd.DataFrame:
    """This machine's rows, labelled measured: for each s of `devices.measure` (a grid), the
    backbone cut to s (layers and heads removed, LoRA of rank kept_ranks, weights at
    param_bits) runs one random sequence of seq_len tokens in the profiler's measurement
    windows. Latency is always real; energy and power are NaN with the meter's reason where
    the device has no counter."""
    import torch

    from ..energy.device import device_slug
    from ..energy.meter import make_meter
    from .common import pin_threads

    pin_threads(threads)
    shape = model_shape(model_dir, model_name, devices_cfg.get("adapted_modules"))
    grid = configuration_grid(shape, devices_cfg["measure"], where="devices.measure")
    meter = make_meter("auto", allow_estimate=profiling["energy_estimate"], tdp_watts=profiling.get("tdp_watts"))
    try:
        name = device_label if device_label != "auto" else device_slug(meter=meter)
        rows = [measure_configuration(s, model_dir, shape, devices_cfg, profiling, meter, torch.device(meter.device))
                for s in progress(grid, f"measuring {len(grid)} configurations on {name}")]
    finally:
        meter.close()
    provenance = (f"MEASURED here by the device_measure rule: {name} ({meter.source} energy), "
                  f"{threads} thread(s), torch {torch.__version__}")
    table = pd.DataFrame([{"device": name, "source": "measured", "model": shape.name, **s, **metrics,
                           "provenance": provenance} for s, metrics in zip(grid, rows)])
    return write_table(table, out_path, {shape.name: shape.totals()})


def progress(items, description: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=description)


def measure_configuration(s: dict[str, int], model_dir: Path, shape: ModelShape, devices_cfg: dict[str, Any],
                          profiling: dict[str, Any], meter, device) -> dict[str, Any]:
    """Energy, latency and peak power of one forward pass of one sequence cut to `s`."""
    import torch

    from ..energy.profiler import profile_workload
    from .pruned import NotMeasurableHere, backbone_cut_to

    try:
        model = backbone_cut_to(model_dir, s, devices_cfg.get("adapted_modules"), device)
    except NotMeasurableHere as reason:
        nan = float("nan")
        return {"energy_j": nan, "latency_ms": nan, "peak_power_w": nan, "unavailable": str(reason)}
    ids = torch.randint(0, shape.vocab, (1, s["seq_len"]), generator=torch.Generator().manual_seed(0)).to(device)

    @torch.inference_mode()
    def run_once() -> None:
        model(input_ids=ids)

    result = profile_workload(
        run_once, samples_per_iter=1, tokens_per_iter=s["seq_len"], meter=meter,
        warmup_iters=profiling["warmup_iters"], window_iters=profiling["window_iters"], repeats=profiling["repeats"],
        idle_seconds=0.0, min_window_s=profiling["min_window_s"], min_counter_updates=profiling["min_counter_updates"],
        max_window_s=profiling["max_window_s"],
    ).summary
    energy = result["j_per_sample_gross_mean"]
    return {
        "energy_j": energy,
        "latency_ms": result["batch_latency_p50_ms"],
        "peak_power_w": result["peak_power_w_max"],
        "unavailable": "" if energy == energy else f"energy and power: {result['reason'] or meter.source}",
    }


def run_device_cost(export_dir: Path, data_dir: Path, model_dir: Path, model_name: str, devices_cfg: dict[str, Any],
                    surrogate_cfg: dict[str, Any], train_summary: Path, surrogate_evaluation: Path,
                    out_path: Path) -> dict[str, Any]:
    """An export's configuration s, read from the exported model, and its cost on the
    family's unseen device (evaluation/device_cost.py), with the on-device measurements its
    method used and how well the family's meta-surrogate predicts that device."""
    from ..evaluation.device_cost import deployed_configuration, unseen_device_cost
    from ..utils.io import read_json, write_json
    from .common import open_run_data

    _, model = open_run_data(data_dir).load_export(export_dir)
    s = deployed_configuration(model, surrogate_cfg["seq_len"], surrogate_cfg["param_bits"])
    shape = model_shape(model_dir, model_name, devices_cfg.get("adapted_modules"))
    device = surrogate_cfg["unseen_device"]
    stats = read_json(train_summary)["method_stats"]
    record = {"device": device, "s": s, **unseen_device_cost(device, shape, s),
              "on_device_measurements": int(stats.get("on_device_measurements", 0)),
              "surrogate_on_unseen": surrogate_scores(surrogate_evaluation, device)}
    write_json(out_path, record)
    return record


def surrogate_scores(evaluation_path: Path, device: str) -> dict[str, dict[str, Any]]:
    """The calibrated meta-surrogate's scores on `device`, per target (rule surrogate_evaluation)."""
    from ..utils.io import json_safe

    frame = pd.read_parquet(evaluation_path)
    rows = frame[(frame["held_out_device"] == device) & frame["predictor"].str.startswith("meta_surrogate")]
    keys = ("mape_pct", "within_10pct", "spearman", "n_test", "unavailable")
    return {row["target"]: {k: json_safe(row[k]) for k in keys} for row in rows.to_dict("records")}
