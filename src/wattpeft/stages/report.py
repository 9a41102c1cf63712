"""Report stage: per-family aggregation, the top-level aggregate, figures and seed claims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils.io import read_json, write_json


def run_family_aggregate(metrics_paths: list[Path], family: str, family_cfg: dict[str, Any], out_path: Path,
                         extras: dict[str, Path] | None = None) -> dict:
    """`extras`: named family outputs beside the runs (surrogate_evaluation: a parquet)."""
    from ..report.aggregate import aggregate_family

    obj = aggregate_family(family, [Path(p) for p in metrics_paths], family_cfg)
    for name, path in (extras or {}).items():
        obj[name] = family_extra(name, Path(path))
    write_json(out_path, obj)
    return obj


def family_extra(name: str, path: Path) -> Any:
    if name == "surrogate_evaluation":
        import pandas as pd

        from ..utils.io import json_safe

        return [{k: json_safe(v) for k, v in row.items()} for row in pd.read_parquet(path).to_dict("records")]
    raise KeyError(f"unknown family output {name!r} ({path})")


def run_combine(family_paths: list[Path], headline: str, out_path: Path) -> dict:
    from ..report.aggregate import combine_families

    families = {}
    for path in family_paths:
        obj = read_json(path)
        families[obj["family"]] = obj
    combined = combine_families(families, headline)
    write_json(out_path, combined)
    return combined


def run_figure(kind: str, family: str, family_path: Path, out_png: Path) -> None:
    from ..report.figures import make_figure

    make_figure(kind, family, read_json(family_path), Path(out_png).with_suffix(""))


def run_learning_curve(train_log: Path, out_png: Path, title: str) -> None:
    from ..report.figures import plot_learning_curve

    plot_learning_curve(Path(train_log), Path(out_png).with_suffix(""), title)


def run_claims(family_paths: list[Path], families_cfg: dict[str, Any], out_dir: Path) -> dict:
    """Every family's seed claims against its aggregated_metrics.json: claims.json, .md, .html."""
    from ..report.claims import write_claims

    families = {}
    for path in family_paths:
        obj = read_json(path)
        families[obj["family"]] = (families_cfg[obj["family"]], obj)
    return write_claims(families, Path(out_dir))
