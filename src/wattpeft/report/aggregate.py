"""Collect every run's metrics.json into comparison/aggregated_metrics.json.

The layout keeps seed 001's keys (primary_metric, metrics, best_proposed,
best_baseline, gap) and adds what seed 001 lacked: seed counts, a correct
standard error, significance tests, hashes, hardware and energy source for
every number. A missing run or a malformed file stops the aggregation with an
error naming the file: a comparison silently built on fewer runs is worse than
none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from wattpeft import __version__
from wattpeft.report.layers import group_gate_utilisation
from wattpeft.report.stats import is_number, seed_stats, welch_test
from wattpeft.utils.io import read_json, write_json

SCHEMA_VERSION = 1
AGGREGATE_NAME = "aggregated_metrics.json"

REQUIRED_KEYS = (
    "run_id", "group_id", "family", "method", "role", "budget", "seed", "mode",
    "metrics", "energy_source", "hardware", "config_hash", "data_hash",
)
ROLES = ("proposed", "baseline", "ablation")
MEASURED_ENERGY_SOURCES = ("nvml_counter", "nvml_power", "rapl")
ENERGY_SOURCES = (*MEASURED_ENERGY_SOURCES, "estimated", "simulated", "unavailable")

MAXIMIZE, MINIMIZE = "maximize", "minimize"
METRIC_DIRECTIONS: dict[str, str | None] = {
    "accuracy": MAXIMIZE, "mcc": MAXIMIZE, "macro_f1": MAXIMIZE, "f1": MAXIMIZE,
    "rouge1": MAXIMIZE, "rouge2": MAXIMIZE, "rougeL": MAXIMIZE, "rougeLsum": MAXIMIZE,
    "hypervolume": MAXIMIZE, "average_accuracy": MAXIMIZE, "auc_retained_accuracy": MAXIMIZE,
    "bwt": MAXIMIZE, "spearman": MAXIMIZE, "share_within_10pct": MAXIMIZE,
    "train_time_s": MINIMIZE, "eval_loss": MINIMIZE, "loss": MINIMIZE, "perplexity": MINIMIZE,
    "trainable_params": MINIMIZE, "achieved_budget_pct": MINIMIZE, "controller_params": MINIMIZE,
    "peak_power_w": MINIMIZE, "mape": MINIMIZE, "extra_memory_mb": MINIMIZE,
    "e_max_worst_ratio": MINIMIZE, "adapter_flop_share": MINIMIZE,
    "modelled_tokens_per_sample": None,  # the inputs' length: neither better nor worse
    "hypervolume_4d": MAXIMIZE, "on_device_measurements": MINIMIZE,
    # A task stream's metrics (evaluation/continual.py) and its deployment costs.
    "retained_auc": MAXIMIZE, "bwt_pp": MAXIMIZE, "fwt_pp": MAXIMIZE,
    "forgetting_max_pp": MINIMIZE, "forgetting_first_pp": MINIMIZE,
    "cpu_latency_overhead_pct": MINIMIZE, "adapter_latency_ms": MINIMIZE, "energy_j_per_task": MINIMIZE,
}
# Families of metrics named by prefix (latency_p50_ms, energy_j_per_sample_net, ...).
PREFIX_DIRECTIONS = (
    ("latency", MINIMIZE), ("energy", MINIMIZE), ("forgetting", MINIMIZE),
    ("rouge", MAXIMIZE), ("accuracy", MAXIMIZE), ("modelled", MINIMIZE),
    ("unseen_", MINIMIZE),  # cost on a hardware-surrogate family's unseen device
    ("surrogate_mape", MINIMIZE), ("surrogate_within", MAXIMIZE),  # its meta-surrogate's error there
)
# Metrics priced by an energy table (energy/table.py), not measured: they start with
# "modelled_" (the measured ones start with "energy", which an unavailable energy source
# forbids), and E_max, HEST's per-sequence cap, with its worst ratio over the inputs.
MODELLED_PREFIXES = ("modelled_", "e_max_")


class MetricsFileError(ValueError):
    """A metrics.json that exists but cannot be used (bad JSON, missing key, bad value)."""


# Metrics about a hardware-surrogate family's unseen device: its cost of each export, the
# hypervolume built on it, the surrogate's error there and the rows of it a method used.
# Where that device is simulated (aggregated "hypervolume".cost_source), so are they.
DEVICE_COST_PREFIXES = ("unseen_", "hypervolume_4d", "surrogate_mape_", "surrogate_within_10pct_",
                        "on_device_measurements")


def is_device_cost(metric: str) -> bool:
    return metric.startswith(DEVICE_COST_PREFIXES)


def is_modelled(metric: str) -> bool:
    """True for a metric computed from the energy table (a model), never a measurement."""
    return metric.startswith(MODELLED_PREFIXES)


def metric_direction(name: str, primary: dict | None = None) -> str | None:
    """maximize / minimize for a metric; the family's primary_metric entry wins."""
    if primary and primary.get("name") == name and primary.get("direction"):
        return primary["direction"]
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    for prefix, direction in PREFIX_DIRECTIONS:
        if name.startswith(prefix):
            return direction
    return None


# ---------------------------------------------------------------- loading


def load_run(path: Path) -> dict:
    """Read one metrics.json and check it has everything the report relies on."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"metrics file missing: {path} (the run did not finish or was skipped; "
            "refusing to aggregate without it)"
        )
    try:
        run = read_json(path)
    except json.JSONDecodeError as err:
        raise MetricsFileError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(run, dict):
        raise MetricsFileError(f"{path}: expected a JSON object, got {type(run).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in run]
    if missing:
        raise MetricsFileError(f"{path}: missing required key(s) {missing}")
    _check_values(run, path)
    return run


def _check_values(run: dict, path: Path) -> None:
    if run["role"] not in ROLES:
        raise MetricsFileError(f"{path}: role {run['role']!r} is not one of {ROLES}")
    if run["energy_source"] not in ENERGY_SOURCES:
        raise MetricsFileError(
            f"{path}: energy_source {run['energy_source']!r} is not one of {ENERGY_SOURCES}"
        )
    if not isinstance(run["metrics"], dict):
        raise MetricsFileError(f"{path}: 'metrics' must be an object")
    for name, value in run["metrics"].items():
        if isinstance(value, str):
            # "n/a" or "0" strings hide an unavailable value: the writer must use null.
            raise MetricsFileError(f"{path}: metric {name!r} is a string ({value!r}); use a number or null")
    if run["energy_source"] == "unavailable":
        measured = [k for k, v in run["metrics"].items() if k.startswith("energy") and is_number(v)]
        if measured:
            raise MetricsFileError(
                f"{path}: energy_source is 'unavailable' but {measured} have values"
            )


def load_runs(metrics_paths: Iterable[Path]) -> list[dict]:
    """Load all runs; every path must exist and every run_id must be unique."""
    runs, seen = [], {}
    for path in metrics_paths:
        run = load_run(Path(path))
        if run["run_id"] in seen:
            raise MetricsFileError(
                f"run_id {run['run_id']!r} appears in both {seen[run['run_id']]} and {path}"
            )
        seen[run["run_id"]] = path
        run["_path"] = str(path)
        runs.append(run)
    if not runs:
        raise ValueError("no metrics.json files given: nothing to aggregate")
    modes = sorted({run["mode"] for run in runs})
    if len(modes) > 1:
        raise MetricsFileError(f"runs mix modes {modes}: trial and full results must not be compared")
    return runs


def _check_against_config(runs: list[dict], families_cfg: dict) -> None:
    """Each run belongs to a configured family/method with the configured role, and
    each configured family and method has at least one run."""
    for run in runs:
        family_cfg = families_cfg.get(run["family"])
        if family_cfg is None:
            raise MetricsFileError(f"{run['_path']}: family {run['family']!r} is not configured")
        method_cfg = family_cfg.get("methods", {}).get(run["method"])
        if method_cfg is None:
            raise MetricsFileError(
                f"{run['_path']}: method {run['method']!r} is not configured in family {run['family']!r}"
            )
        if method_cfg.get("role") != run["role"]:
            raise MetricsFileError(
                f"{run['_path']}: role {run['role']!r} differs from the configured "
                f"role {method_cfg.get('role')!r} (stale results?)"
            )
        if family_cfg["primary_metric"]["name"] not in run["metrics"]:
            raise MetricsFileError(
                f"{run['_path']}: primary metric {family_cfg['primary_metric']['name']!r} "
                "is absent (write null if it is unavailable)"
            )
    for family, family_cfg in families_cfg.items():
        present = {run["method"] for run in runs if run["family"] == family}
        absent = [method for method in family_cfg.get("methods", {}) if method not in present]
        if absent:
            raise MetricsFileError(f"family {family!r}: no metrics.json given for method(s) {absent}")


# ---------------------------------------------------------------- groups


def _group_runs(runs: list[dict], family_cfg: dict) -> dict[str, list[dict]]:
    """group_id -> runs sorted by seed, groups ordered by configured method, then budget."""
    method_order = list(family_cfg.get("methods", {}))
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(run["group_id"], []).append(run)
    for group_id, members in groups.items():
        _check_group(group_id, members)
        members.sort(key=lambda run: _sort_key(run["seed"]))

    def order(item: tuple[str, list[dict]]) -> tuple:
        first = item[1][0]
        return (method_order.index(first["method"]), _sort_key(first["budget"]), item[0])

    return dict(sorted(groups.items(), key=order))


def _sort_key(value: Any) -> tuple:
    # Seeds and budgets are numbers in practice; None or text still sort deterministically.
    return (0, value, "") if is_number(value) else (1, 0, str(value))


def _check_group(group_id: str, members: list[dict]) -> None:
    for key in ("family", "method", "role", "budget"):
        values = {json.dumps(run[key]) for run in members}
        if len(values) > 1:
            paths = [run["_path"] for run in members]
            raise MetricsFileError(f"group {group_id!r} mixes {key} values {sorted(values)}: {paths}")
    seeds = [run["seed"] for run in members]
    duplicates = sorted({json.dumps(s) for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise MetricsFileError(f"group {group_id!r} has seed(s) {duplicates} more than once")


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct values in first-seen order (works for dicts, which are unhashable)."""
    seen, out = set(), []
    for value in values:
        key = json.dumps(value, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _mean_of(values: Iterable[Any]) -> float | None:
    numbers = [v for v in values if is_number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def combined_energy_source(sources: Iterable[str]) -> str:
    """One label for several runs: the shared source, or 'mixed: a, b' so nothing hides."""
    distinct = sorted(set(sources))
    return distinct[0] if len(distinct) == 1 else "mixed: " + ", ".join(distinct)


def energy_table_source(tables: Iterable[dict | None]) -> str | None:
    """The source ('default' / 'measured') of the energy table that priced the runs' modelled_*
    metrics, 'mixed: a, b' when they differ, None when no run names one."""
    sources = [table.get("source") or "unknown" for table in tables if isinstance(table, dict)]
    return combined_energy_source(sources) if sources else None


def _group_provenance(members: list[dict]) -> dict:
    first = members[0]
    return {
        "method": first["method"],
        "role": first["role"],
        "budget": first["budget"],
        "model": first.get("model"),
        "dataset": first.get("dataset"),
        "run_ids": [run["run_id"] for run in members],
        "seeds": [run["seed"] for run in members],
        "budget_achieved_pct": _mean_of(run.get("budget_achieved_pct") for run in members),
        "energy_source": combined_energy_source(run["energy_source"] for run in members),
        "energy_sources": sorted({run["energy_source"] for run in members}),
        "energy_flags": sorted({flag for run in members for flag in run.get("energy_flags", [])}),
        "energy_table": energy_table_source(run.get("energy_table") for run in members),
        "hardware": _distinct(run["hardware"] for run in members),
        "config_hashes": _distinct(run["config_hash"] for run in members),
        "data_hashes": _distinct(run["data_hash"] for run in members),
    }


# ---------------------------------------------------------------- family object


def _scalar_metric_names(runs: list[dict]) -> tuple[list[str], list[str]]:
    """(scalar metric names, non-scalar names such as an accuracy matrix), first-seen order."""
    scalar, other = [], []
    for run in runs:
        for name, value in run["metrics"].items():
            bucket = other if isinstance(value, (list, dict)) else scalar
            if name not in scalar and name not in other:
                bucket.append(name)
    return scalar, other


def _metric_value(run: dict, name: str) -> float | int | None:
    value = run["metrics"].get(name)
    return value if is_number(value) else None  # null, absent and NaN all mean unavailable


def _metrics_table(groups: dict[str, list[dict]], names: list[str]) -> dict:
    return {
        name: {run["run_id"]: _metric_value(run, name) for members in groups.values() for run in members}
        for name in names
    }


def _summary(groups: dict[str, list[dict]], names: list[str], provenance: dict) -> dict:
    summary = {}
    for name in names:
        summary[name] = {}
        for group_id, members in groups.items():
            stats = seed_stats([_metric_value(run, name) for run in members], [run["seed"] for run in members])
            prov = provenance[group_id]
            stats.update(
                energy_source=prov["energy_source"],
                energy_sources=prov["energy_sources"],
                energy_flags=prov["energy_flags"],
                hardware=prov["hardware"],
                config_hashes=prov["config_hashes"],
                data_hashes=prov["data_hashes"],
            )
            summary[name][group_id] = stats
    return summary


def _best_group(role: str, primary: str, direction: str, summary: dict, provenance: dict) -> tuple[str | None, str | None]:
    """(group_id with the best mean primary metric among `role`, reason when there is none)."""
    of_role = [gid for gid, prov in provenance.items() if prov["role"] == role]
    if not of_role:
        return None, f"no {role} method in this family"
    scored = [gid for gid in of_role if summary[primary][gid]["mean"] is not None]
    if not scored:
        return None, f"{primary} is unavailable for every {role} group"
    sign = 1.0 if direction == MAXIMIZE else -1.0
    # max() keeps the first of equal means, i.e. the first group in configured order.
    return max(scored, key=lambda gid: sign * summary[primary][gid]["mean"]), None


def _best_entry(group_id: str, members: list[dict], primary: str, direction: str, summary: dict, provenance: dict) -> dict:
    """Seed 001's {run_id, value} plus the seed statistics and provenance behind it.

    `value` is the group mean over seeds; `run_id` is the group's best single seed.
    """
    stats = summary[primary][group_id]
    sign = 1.0 if direction == MAXIMIZE else -1.0
    scored = [run for run in members if _metric_value(run, primary) is not None]
    best_run = max(scored, key=lambda run: sign * _metric_value(run, primary))
    prov = provenance[group_id]
    return {
        "run_id": best_run["run_id"],
        "value": stats["mean"],
        "value_is": f"mean over {stats['n']} seed(s); run_id is the best single seed",
        "group_id": group_id,
        "method": prov["method"],
        "budget": prov["budget"],
        "n": stats["n"],
        "std": stats["std"],
        "se": stats["se"],
        "se_note": stats["note"],
        "seeds": stats["seeds"],
        "run_ids": prov["run_ids"],
        "config_hash": best_run["config_hash"],
        "data_hash": best_run["data_hash"],
        "config_hashes": prov["config_hashes"],
        "data_hashes": prov["data_hashes"],
        "hardware": best_run["hardware"],
        "energy_source": prov["energy_source"],
    }


def percent_gap(proposed: float | None, baseline: float | None, direction: str) -> tuple[float | None, str | None]:
    """(gap in percent, note): (p - b) / |b| x 100, sign flipped for minimised metrics,
    so a positive gap always means the proposed method is better."""
    if proposed is None:
        return None, "proposed value unavailable"
    if baseline is None:
        return None, "baseline value unavailable"
    if baseline == 0:
        return None, "baseline value is 0: a relative gap is undefined"
    gap = (proposed - baseline) / abs(baseline) * 100.0
    return (-gap if direction == MINIMIZE else gap), None


def _significance(best_gid: str | None, primary: str, groups: dict, provenance: dict, reason: str | None) -> dict:
    """Welch's t-test of the best proposed group against every baseline group."""
    result = {"metric": primary, "proposed_group": best_gid, "note": reason, "tests": {}}
    if best_gid is None:
        return result
    proposed_values = [_metric_value(run, primary) for run in groups[best_gid]]
    for gid, prov in provenance.items():
        if prov["role"] != "baseline":
            continue
        baseline_values = [_metric_value(run, primary) for run in groups[gid]]
        result["tests"][gid] = welch_test(proposed_values, baseline_values)
    if not result["tests"]:
        result["note"] = "no baseline method in this family"
    return result


def _best_and_gap(primary: str, direction: str, groups: dict, summary: dict, provenance: dict) -> dict:
    """best_proposed, best_baseline, gap (+ note) and significance on the primary metric."""
    proposed_gid, proposed_reason = _best_group("proposed", primary, direction, summary, provenance)
    baseline_gid, baseline_reason = _best_group("baseline", primary, direction, summary, provenance)
    best = {
        gid: _best_entry(gid, groups[gid], primary, direction, summary, provenance)
        for gid in (proposed_gid, baseline_gid) if gid is not None
    }
    best_proposed, best_baseline = best.get(proposed_gid), best.get(baseline_gid)
    gap, gap_note = percent_gap(
        best_proposed and best_proposed["value"], best_baseline and best_baseline["value"], direction
    )
    return {
        "best_proposed": best_proposed,
        "best_baseline": best_baseline,
        "gap": gap,
        "gap_note": proposed_reason or baseline_reason or gap_note,
        "gap_basis": "group means over seeds, percent of |baseline|; positive = proposed better",
        "significance": _significance(proposed_gid, primary, groups, provenance, proposed_reason),
    }


def family_object(family: str, runs: list[dict], family_cfg: dict) -> dict:
    """Seed 001's comparison object for one family, with seed statistics and provenance."""
    primary_cfg = family_cfg["primary_metric"]
    primary, direction = primary_cfg["name"], metric_direction(primary_cfg["name"], primary_cfg)
    if direction not in (MAXIMIZE, MINIMIZE):
        raise ValueError(f"family {family!r}: primary metric {primary!r} needs direction maximize or minimize")
    groups = _group_runs(runs, family_cfg)
    provenance = {gid: _group_provenance(members) for gid, members in groups.items()}
    names, non_scalar = _scalar_metric_names(runs)
    summary = _summary(groups, names, provenance)

    headline = _best_and_gap(primary, direction, groups, summary, provenance)
    return {
        "family": family,
        "description": family_cfg.get("description"),
        "primary_metric": primary,
        "primary_metric_direction": direction,
        "metrics": _metrics_table(groups, names),
        **headline,
        "summary": summary,
        "groups": provenance,
        "runs": {run["run_id"]: _run_provenance(run) for members in groups.values() for run in members},
        "metric_directions": {name: metric_direction(name, primary_cfg) for name in names},
        "non_scalar_metrics": non_scalar,
        "energy_sources": sorted({run["energy_source"] for run in runs}),
        "energy_flags": sorted({flag for run in runs for flag in run.get("energy_flags", [])}),
        # The tables that priced the modelled_* metrics (source, reference, J/FLOP): [] when
        # no run has modelled energy.
        "energy_tables": _distinct(run["energy_table"] for run in runs if isinstance(run.get("energy_table"), dict)),
        # Per gated group: the share of (token, direction) pairs in each gate state per layer,
        # mean over seeds (report.layers.group_gate_utilisation); {} when no run has gates.
        "gate_utilisation": _gate_utilisation(groups),
        "mode": runs[0]["mode"],
    }


def _gate_utilisation(groups: dict[str, list[dict]]) -> dict:
    out = {}
    for group_id, members in groups.items():
        try:
            utilisation = group_gate_utilisation(members)
        except ValueError as err:
            raise MetricsFileError(f"group {group_id!r}: {err}") from err
        if utilisation is not None:
            out[group_id] = utilisation
    return out


def _run_provenance(run: dict) -> dict:
    keys = ("group_id", "method", "role", "budget", "seed", "config_hash", "data_hash",
            "hardware", "energy_source", "mode")
    record = {key: run[key] for key in keys}
    for optional in ("energy_reason", "energy_flags", "energy_windows", "budget_achieved_pct",
                     "model", "dataset", "task", "n_test", "per_module", "per_layer", "energy_table",
                     "device_cost", "continual"):
        record[optional] = run.get(optional)
    record["metrics_file"] = run["_path"]
    return record


# ---------------------------------------------------------------- top level


def aggregate_family(family: str, metrics_paths: list[Path], family_cfg: dict) -> dict:
    """What results/comparison/{family}/aggregated_metrics.json holds: one family alone."""
    runs = load_runs(metrics_paths)
    _check_against_config(runs, {family: family_cfg})
    if not runs:
        raise MetricsFileError(f"family {family!r} is configured but no metrics.json was given for it")
    frame = add_hypervolumes(runs, family_cfg["primary_metric"]["name"])
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_by": {"package": "wattpeft", "version": __version__},
        **family_object(family, runs, family_cfg),
        **({"hypervolume": frame} if frame else {}),
    }


UNSEEN_COSTS = ("unseen_energy_j", "unseen_latency_ms", "unseen_peak_power_w")


def add_hypervolumes(runs: list[dict], primary: str) -> dict | None:
    """Each run's 4-D hypervolume of (primary metric, -energy, -latency, -peak power) on the
    family's unseen device, as the metric hypervolume_4d, all in one frame shared by every
    method (report/hypervolume.py: reference and ideal from all runs' points). Returns the
    frame, or None when no run has a cost on an unseen device."""
    from .hypervolume import hypervolume, maximised_points, shared_bounds

    costed = [run for run in runs if all(_finite(run["metrics"].get(k)) for k in (primary, *UNSEEN_COSTS))]
    if not costed:
        return None
    points = {run["run_id"]: maximised_points(run["metrics"][primary], *(run["metrics"][k] for k in UNSEEN_COSTS))
              for run in costed}
    reference, ideal = shared_bounds(points)
    for run in costed:
        run["metrics"]["hypervolume_4d"] = hypervolume(points[run["run_id"]], reference, ideal)
    sources = sorted({run.get("device_cost", {}).get("source", "unknown") for run in costed})
    return {"axes": [primary, *UNSEEN_COSTS], "reference": reference.tolist(), "ideal": ideal.tolist(),
            "device": _distinct(run.get("device_cost", {}).get("device") for run in costed),
            "cost_source": sources, "runs": len(costed),
            "note": "normalised: each axis mapped to [0, 1] between the shared reference and ideal"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def aggregate(metrics_paths: list[Path], families_cfg: dict, headline_family: str) -> dict:
    """Build the top-level aggregated object (see module docstring)."""
    if headline_family not in families_cfg:
        raise ValueError(f"headline family {headline_family!r} is not in the configured families {sorted(families_cfg)}")
    runs = load_runs(metrics_paths)
    _check_against_config(runs, families_cfg)
    families = {}
    for family, family_cfg in families_cfg.items():
        family_runs = [run for run in runs if run["family"] == family]
        if not family_runs:
            raise MetricsFileError(f"family {family!r} is configured but no metrics.json was given for it")
        families[family] = family_object(family, family_runs, family_cfg)
    return combine_families(families, headline_family)


def combine_families(families: dict[str, dict], headline_family: str) -> dict:
    """The top level: the headline family's seed-001 keys, every run's metrics, all families."""
    if headline_family not in families:
        raise ValueError(f"headline family {headline_family!r} is not among {sorted(families)}")
    families = {name: {k: v for k, v in obj.items() if k not in ("schema_version", "generated_by")}
                for name, obj in families.items()}
    headline = families[headline_family]
    all_metrics: dict[str, dict] = {}
    for family_obj in families.values():
        for name, per_run in family_obj["metrics"].items():
            all_metrics.setdefault(name, {}).update(per_run)
    return {
        "schema_version": SCHEMA_VERSION,
        "headline_family": headline_family,
        "primary_metric": headline["primary_metric"],
        "primary_metric_direction": headline["primary_metric_direction"],
        "metrics": all_metrics,
        "best_proposed": headline["best_proposed"],
        "best_baseline": headline["best_baseline"],
        "gap": headline["gap"],
        "gap_note": headline["gap_note"],
        "energy_sources": sorted({src for obj in families.values() for src in obj["energy_sources"]}),
        "mode": _single_mode(families),
        "n_runs": sum(len(obj["runs"]) for obj in families.values()),
        "generated_by": {"package": "wattpeft", "version": __version__},
        "families": families,
    }


def _single_mode(families: dict[str, dict]) -> str:
    modes = sorted({obj["mode"] for obj in families.values()})
    if len(modes) > 1:
        raise MetricsFileError(f"families mix modes {modes}: trial and full results must not be compared")
    return modes[0]


def family_file_object(aggregated: dict, family: str) -> dict:
    """What results/comparison/{family}/aggregated_metrics.json holds."""
    return {
        "schema_version": aggregated["schema_version"],
        "generated_by": aggregated["generated_by"],
        **aggregated["families"][family],
    }


def write_aggregate(
    metrics_paths: list[Path],
    families_cfg: dict,
    headline_family: str,
    out_dir: Path = Path("results/comparison"),
) -> dict:
    """Write {out_dir}/aggregated_metrics.json and {out_dir}/{family}/aggregated_metrics.json."""
    aggregated = aggregate(metrics_paths, families_cfg, headline_family)
    out_dir = Path(out_dir)
    for family in aggregated["families"]:
        write_json(out_dir / family / AGGREGATE_NAME, family_file_object(aggregated, family))
    write_json(out_dir / AGGREGATE_NAME, aggregated)
    return aggregated
