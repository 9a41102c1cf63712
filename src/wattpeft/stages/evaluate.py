"""Evaluation of a hardened export on the test split, joined with its energy/latency
profile, into the run's metrics.json (the one file the report reads per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils.io import read_json, write_json
from .common import open_run_data, pin_threads
from .profile import PROFILE_PROVENANCE, SUMMARY_FIELDS, profile_summary

# Profile fields copied into metrics.json's "metrics" (the rest are provenance).
PROFILE_METRICS = [name for name in SUMMARY_FIELDS if name not in PROFILE_PROVENANCE]


def per_module_data(export_card: dict[str, Any], method_stats: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's `per_module`: ‖ΔW_m‖_F per linear layer from the export card, and the
    method's per-module importance I_m where it reports one (FW-LoRA); module names as in the
    base model. Kept apart from the scalar `metrics`."""
    data: dict[str, Any] = {"delta_norm": dict(export_card.get("delta_norms") or {})}
    importance = method_stats.get("importance")
    if isinstance(importance, dict) and importance:
        data["importance"] = {str(name): float(value) for name, value in importance.items()}
    return data


def _modelled_energy(model, method_cls, test, task, table, card, ev, device) -> dict[str, Any]:
    """Modelled energy per sample from prefill passes over the test inputs (the prompts for
    summarisation), priced by the energy table."""
    import torch

    from ..evaluation.modelled_energy import modelled_energy

    column = "prompt_ids" if task == "summarisation" else "input_ids"
    sequences = [list(map(int, ids)) for ids in test[column]]
    return modelled_energy(model, method_cls, sequences, table, card["backbone_flops_per_token"],
                           torch.device(device), long_tokens=ev["energy_long_tokens"])


def run_evaluate(
    eval_cfg: dict[str, Any],
    run_config_path: Path,
    train_summary_path: Path,
    export_dir: Path,
    data_dir: Path,
    profile_path: Path,
    out_metrics: Path,
    out_predictions: Path,
    threads: int = 1,
    progress: bool = True,
    energy_table_path: Path | None = None,
    device_cost_path: Path | None = None,
) -> dict[str, Any]:
    """`eval_cfg` is the run's evaluate view (run_id, role, evaluation settings): only
    these and the trained run's own files decide the result, so that changing evaluation
    settings reruns evaluation alone. `energy_table_path`: the device's J/FLOP table for the
    modelled energy (evaluation/modelled_energy.py); without it, the documented defaults.
    `device_cost_path`: the export's cost on a hardware-surrogate family's unseen device
    (rule device_cost), copied in as unseen_* metrics."""
    import torch

    from ..energy.device import device_slug
    from ..energy.table import check_table, default_table
    from ..evaluation.evaluate import evaluate_model
    from ..methods import get_method

    pin_threads(threads)
    run_cfg = read_json(run_config_path)
    summary = read_json(train_summary_path)
    card = read_json(Path(export_dir) / "export.json")
    table = (check_table(read_json(energy_table_path), str(energy_table_path)) if energy_table_path
             else default_table("no energy table was given"))
    data = open_run_data(data_dir)
    tokenizer, model = data.load_export(export_dir)
    # Latency is measured where the job runs: on its GPU when it has one.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    ev = eval_cfg["evaluation"]
    test = data.frame("test")
    result = evaluate_model(
        model, tokenizer, test, data.task,
        label_names=data.label_names,
        batch_size=ev["batch_size"],
        max_new_tokens=ev["max_new_tokens"],
        latency_samples=ev["latency_samples"],
        device=device,
        progress=progress,
        latency_workload=ev["latency_workload"],
    )
    modelled = _modelled_energy(model, get_method(card["method"]), test, data.task, table, card, ev, device)
    profile = profile_summary(profile_path)
    metrics = dict(result["metrics"])
    metrics.update(modelled["metrics"])
    metrics.update({name: profile.get(name) for name in PROFILE_METRICS})
    stats = summary["method_stats"]
    metrics.update(
        train_time_s=summary["train_time_s"],
        trainable_params=stats.get("trainable_params"),
        controller_params=stats.get("controller_params", 0),
        adapter_params=stats.get("adapter_params"),
        effective_adapter_params=stats.get("effective_adapter_params"),
        achieved_budget_pct=stats.get("achieved_budget_pct"),
    )
    device_cost = read_json(device_cost_path) if device_cost_path else None
    if device_cost:
        metrics.update({f"unseen_{k}": device_cost[k] for k in ("energy_j", "latency_ms", "peak_power_w")},
                       on_device_measurements=device_cost["on_device_measurements"])
        # The family's meta-surrogate on the unseen device (the same for every run of it).
        for target, scores in device_cost["surrogate_on_unseen"].items():
            metrics[f"surrogate_mape_{target}"] = scores["mape_pct"]
            metrics[f"surrogate_within_10pct_{target}"] = scores["within_10pct"]
    record = {
        "run_id": run_cfg["run_id"],
        "group_id": run_cfg["group_id"],
        "family": run_cfg["family"],
        "method": run_cfg["method"],
        "role": eval_cfg["role"],
        "model": run_cfg["model"]["name"],
        "dataset": run_cfg["dataset"]["name"],
        "budget": run_cfg["budget"],
        "seed": run_cfg["seed"],
        "mode": run_cfg["mode"],
        "task": data.task,
        "metrics": metrics,
        "budget_achieved_pct": stats.get("achieved_budget_pct"),
        "energy_source": profile["energy_source"],
        "energy_reason": profile.get("energy_reason"),
        "energy_flags": profile["energy_flags"],
        # Modelled energy (modelled_* metrics) is priced by this table: "default" = documented
        # defaults (energy/table.py), not a measurement of this device.
        "energy_table": {k: table.get(k) for k in ("source", "reference", "j_per_flop")},
        "energy_windows": {"valid": profile.get("energy_windows_valid"), "total": profile.get("energy_windows_total")},
        "profile_workload": profile["workload"],
        "hardware": {
            "device": profile["device"],
            "name": profile.get("device_name"),
            "profile_label": profile["profile_label"],
            "eval_device": device_slug(device),
            "threads": threads,
            "train_threads": summary.get("threads"),
            "mixed_precision": summary.get("mixed_precision"),
        },
        "evaluation": ev,
        "config_hash": run_cfg["config_hash"],
        "data_hash": data.data_hash,
        "n_test": len(test),
        "tuned_params": summary.get("tuned_params", {}),
        "per_module": per_module_data(card, stats),
        "per_layer": {"gate_utilisation": modelled["gate_utilisation"]} if modelled["gate_utilisation"] else {},
    }
    if device_cost:
        record["device_cost"] = {k: device_cost[k] for k in ("device", "source", "reason", "s")}
    write_json(out_predictions, result["predictions"])
    write_json(out_metrics, record)
    return record
