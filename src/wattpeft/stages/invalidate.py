"""When a job fails, the results built on its old output must not survive as if current.

Snakemake deletes a failed job's outputs, but when the downstream outputs still exist it
treats the missing intermediate as not needed and reports "Nothing to be done", keeping
results computed from the old inputs. So a failing job removes the leaves that depend on
it (each affected run's metrics.json and its family's aggregates); the next run rebuilds
the whole chain.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from ..config import RunKey, iter_runs, parse_run_id, validate_config


def affected_runs(rule: str, wildcards: dict[str, str], cfg: dict[str, Any]) -> list[RunKey]:
    """Every run whose results depend on the output of job (rule, wildcards)."""
    families = cfg["families"]

    def runs_where(keep) -> list[RunKey]:
        return [key for key in iter_runs(cfg) if keep(key, families[key.family])]

    if "run" in wildcards:
        return [parse_run_id(wildcards["run"])]
    if "group" in wildcards:
        return runs_where(lambda key, fam: key.group_id == wildcards["group"])
    if rule == "tokenise":
        return runs_where(lambda key, fam: (fam["dataset"], fam["model"]) == (wildcards["dataset"], wildcards["model"]))
    if rule == "model_asset":
        return runs_where(lambda key, fam: fam["model"] == wildcards["model"])
    if rule == "dataset_asset":
        datasets = {name for name, spec in cfg["datasets"].items() if spec.get("asset") == wildcards["asset"]}
        return runs_where(lambda key, fam: fam["dataset"] in datasets)
    return []  # report rules: nothing downstream but other report files


def stale_paths(runs: Iterable[RunKey], results: Path = Path("results")) -> list[Path]:
    runs = list(runs)
    paths = [results / "runs" / key.run_id / "metrics.json" for key in runs]
    paths += [results / "comparison" / family / "aggregated_metrics.json" for family in sorted({k.family for k in runs})]
    if runs:
        paths.append(results / "comparison" / "aggregated_metrics.json")
    return paths


def invalidate_downstream(rule: str, wildcards: dict[str, str], config: dict[str, Any]) -> list[Path]:
    """Remove the existing results that depend on a failed job; returns what was removed."""
    removed = []
    for path in stale_paths(affected_runs(rule, wildcards, validate_config(config))):
        if path.exists():
            path.unlink()
            removed.append(path)
    if removed:
        print(f"[wattpeft] {rule} failed: removed {len(removed)} stale downstream result(s): "
              + ", ".join(str(p) for p in removed), file=sys.stderr)
    return removed
