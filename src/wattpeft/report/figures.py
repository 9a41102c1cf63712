"""Comparison figures (one registry entry per kind) and per-run learning curves.

Each kind writes {out_stem}.pdf and {out_stem}.png, both renamed into place
only once complete, so a Snakemake rule can target a single figure. Figures
are drawn on bare `Figure` objects with the Agg canvas (no pyplot state, no
display needed) and saved without timestamps, so a rerun gives the same bytes.
Unavailable values are drawn as the word "unavailable", never as a zero bar,
and every figure names its energy source in a footer: 'estimated' and
'simulated' energy is never passed off as measured.

Shared labels, formats and "no data" sentences live in drawing.py; the spectral kinds
(gate_utilisation, spectral_table) in spectral.py, the hardware-surrogate kinds
(surrogate_accuracy, hardware_table) in hardware.py, the continual kinds (retained_accuracy,
accuracy_matrix, adapter_norm) in continual.py. A kind may return a note that the
footer prints above the energy source (what the data is, e.g. which energy table).
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from pathlib import Path
from typing import Callable, Iterator

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from wattpeft.report import continual, hardware, spectral
from wattpeft.report.aggregate import MAXIMIZE, MEASURED_ENERGY_SOURCES
from wattpeft.report.drawing import (
    ENERGY_SOURCE_LABELS,
    UNAVAILABLE,
    budget_text,
    budgets_in_order,
    format_value,
    group_at,
    group_stats,
    message_axes,
    methods_in_order,
    metric_label,
    missing_energy_text,
    no_data,
    set_title,
    stat_mean,
)
from wattpeft.report.kinds import FIGURE_KINDS
from wattpeft.report.layers import LayerGrid, family_module_stats
from wattpeft.utils.io import atomic_path

RC = {
    "svg.hashsalt": "wattpeft",  # stable ids in any SVG output
    "pdf.fonttype": 42,  # embed TrueType: text stays selectable in the PDF
    "font.size": 9,
    "axes.titlesize": 10,
}
PDF_METADATA = {"CreationDate": None, "ModDate": None}  # no timestamp: reruns are byte-stable
PNG_DPI = 150
ROLE_COLORS = {"proposed": "#d55e00", "baseline": "#0072b2", "ablation": "#8c8c8c"}  # colour-blind safe
SERIES_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7")


# ---------------------------------------------------------------- family data


def family_data(aggregated: dict, family: str) -> dict:
    """The per-family object, from the top-level file or a per-family file."""
    if "families" in aggregated:
        if family not in aggregated["families"]:
            raise KeyError(f"family {family!r} not in aggregated metrics (has {sorted(aggregated['families'])})")
        return aggregated["families"][family]
    if aggregated.get("family") == family:
        return aggregated
    raise KeyError(f"aggregated object is for family {aggregated.get('family')!r}, not {family!r}")


def _group_ids(family_obj: dict) -> list[str]:
    return list(family_obj["groups"])


def _group_label(prov: dict, multiline: bool = True) -> str:
    budget, achieved = prov["budget"], prov.get("budget_achieved_pct")
    nominal = f"{budget:g}%" if isinstance(budget, (int, float)) else None
    if nominal and isinstance(achieved, (int, float)):
        nominal += f" (got {achieved:.3g}%)"  # the nominal budget beside the achieved one
    parts = [prov["method"], nominal, f"[{prov['role']}]"]
    return ("\n" if multiline else " ").join(p for p in parts if p)


def _energy_metrics(family_obj: dict) -> list[str]:
    return [name for name in family_obj["summary"] if name.startswith("energy")]


def _is_unmeasured_energy(metric: str, source: str) -> bool:
    """True where a value must carry its 'estimated'/'simulated' label."""
    return metric.startswith("energy") and not all(
        part in MEASURED_ENERGY_SOURCES for part in source.removeprefix("mixed: ").split(", ")
    )


def _energy_reasons(family_obj: dict) -> list[str]:
    reasons = {run.get("energy_reason") for run in family_obj["runs"].values()}
    return sorted(r for r in reasons if r)


def _footer_text(family_obj: dict) -> str:
    sources = "; ".join(ENERGY_SOURCE_LABELS.get(s, s) for s in family_obj["energy_sources"])
    flags = family_obj.get("energy_flags") or []
    flag_text = f"  |  energy flags: {', '.join(flags)}" if flags else ""
    return (f"energy source: {sources}{flag_text}  |  mode: {family_obj['mode']}  |  "
            "error bars: standard error (std/sqrt(n))")


# ---------------------------------------------------------------- drawing helpers


def _bar_with_annotation(ax: Axes, x: float, stats: dict | None, width: float, color: str,
                         hatch: str | None = None, metric: str = "") -> None:
    """One bar with a +-se error bar and 'mean +- se / n' above it, or the word 'unavailable'."""
    mean = stat_mean(stats)
    if mean is None:
        missing = _missing_text(stats, metric)
        ax.text(x, 0, f" {missing}", rotation=90, ha="center", va="bottom", fontsize=8, color="#555555")
        return
    se = stats["se"]
    ax.bar(x, mean, width=width, color=color, hatch=hatch, edgecolor="black", linewidth=0.6,
           yerr=se if se is not None else None, capsize=4 if se is not None else 0)
    spread = f"\n± {format_value(se)}" if se is not None else ""
    top = mean + (se or 0.0) if mean >= 0 else 0.0
    source = f", {stats['energy_source']}" if _is_unmeasured_energy(metric, stats["energy_source"]) else ""
    ax.annotate(f"{format_value(mean)}{spread}\nn={stats['n']}{source}", (x, top), xytext=(0, 3),
                textcoords="offset points", ha="center", va="bottom", fontsize=7)


def _missing_text(stats: dict | None, metric: str) -> str:
    if stats is not None and metric.startswith("energy"):
        return missing_energy_text(stats["energy_source"], stats.get("energy_flags", []))
    return UNAVAILABLE


def _group_axis(ax: Axes, family_obj: dict, group_ids: list[str]) -> None:
    ax.set_xticks(range(len(group_ids)))
    ax.set_xticklabels([_group_label(family_obj["groups"][gid]) for gid in group_ids], fontsize=8)
    ax.set_xlabel("method, adapter budget (% of backbone parameters), role")
    ax.set_xlim(-0.6, len(group_ids) - 0.4)


def _headroom(ax: Axes) -> None:
    # Room above the tallest bar for its annotation.
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, 0.0), high + 0.25 * (high - min(low, 0.0) or 1.0))


def _role_legend(ax: Axes, family_obj: dict) -> None:
    roles = [r for r in ROLE_COLORS if any(g["role"] == r for g in family_obj["groups"].values())]
    # Outside the axes: inside it would cover the value annotations above the bars.
    ax.legend(handles=[Patch(facecolor=ROLE_COLORS[r], edgecolor="black", label=r) for r in roles],
              title="role", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _direction_note(family_obj: dict, metric: str) -> str:
    direction = family_obj["metric_directions"].get(metric)
    if direction is None:
        return ""
    return " (higher is better)" if direction == MAXIMIZE else " (lower is better)"


# ---------------------------------------------------------------- figure kinds


def draw_primary_bar(fig: Figure, family: str, family_obj: dict) -> None:
    """Primary metric per group: mean over seeds, +-se error bars, n annotated."""
    metric = family_obj["primary_metric"]
    ax = fig.add_subplot()
    group_ids = _group_ids(family_obj)
    for x, gid in enumerate(group_ids):
        color = ROLE_COLORS[family_obj["groups"][gid]["role"]]
        _bar_with_annotation(ax, x, group_stats(family_obj, metric, gid), 0.6, color, metric=metric)
    _group_axis(ax, family_obj, group_ids)
    _headroom(ax)
    ax.set_ylabel(metric_label(metric))
    gap = family_obj["gap"]
    gap_text = f"gap {gap:+.2f}% (positive = proposed better)" if gap is not None else f"gap: n/a ({family_obj['gap_note']})"
    set_title(ax, f"{family}: {metric}{_direction_note(family_obj, metric)}, mean ± se over seeds\n{gap_text}")
    _role_legend(ax, family_obj)


def draw_seed_spread(fig: Figure, family: str, family_obj: dict) -> None:
    """Every seed's primary-metric value per group, with a box where n >= 3."""
    metric = family_obj["primary_metric"]
    ax = fig.add_subplot()
    group_ids = _group_ids(family_obj)
    for x, gid in enumerate(group_ids):
        prov = family_obj["groups"][gid]
        values = [(seed, family_obj["metrics"][metric][rid]) for seed, rid in zip(prov["seeds"], prov["run_ids"])]
        present = [(seed, v) for seed, v in values if v is not None]
        if not present:
            ax.text(x, 0.5, UNAVAILABLE, ha="center", va="center", transform=ax.get_xaxis_transform(), color="#555555")
            continue
        if len(present) >= 3:
            ax.boxplot([v for _, v in present], positions=[x], widths=0.45, showfliers=False,
                       medianprops={"color": "black"}, boxprops={"color": "#555555"})
        offsets = np.linspace(-0.12, 0.12, len(present)) if len(present) > 1 else [0.0]
        for offset, (seed, value) in zip(offsets, present):
            ax.scatter(x + offset, value, color=ROLE_COLORS[prov["role"]], edgecolor="black", zorder=3, s=30)
            ax.annotate(f"s{seed}", (x + offset, value), xytext=(4, 0), textcoords="offset points", fontsize=6, va="center")
    _group_axis(ax, family_obj, group_ids)
    ax.set_ylabel(metric_label(metric))
    set_title(ax, f"{family}: {metric} per seed{_direction_note(family_obj, metric)}\n(points: one run each, labelled by seed; box: quartiles where n >= 3)")
    _role_legend(ax, family_obj)


def _grouped_bars(fig: Figure, family_obj: dict, metrics: list[str], hatches: tuple) -> Axes:
    """Side-by-side bars of several metrics per group (one series per metric)."""
    ax = fig.add_subplot()
    group_ids = _group_ids(family_obj)
    width = 0.8 / max(len(metrics), 1)
    for i, metric in enumerate(metrics):
        for x, gid in enumerate(group_ids):
            offset = (i - (len(metrics) - 1) / 2) * width
            _bar_with_annotation(ax, x + offset, group_stats(family_obj, metric, gid), width * 0.95,
                                 SERIES_COLORS[i % len(SERIES_COLORS)], hatches[i % len(hatches)], metric)
    _group_axis(ax, family_obj, group_ids)
    _headroom(ax)
    ax.legend(handles=[Patch(facecolor=SERIES_COLORS[i % len(SERIES_COLORS)], hatch=hatches[i % len(hatches)],
                             edgecolor="black", label=metric_label(m)) for i, m in enumerate(metrics)],
              loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=len(metrics), fontsize=8)
    return ax


def draw_latency(fig: Figure, family: str, family_obj: dict) -> None:
    """Batch-1 inference latency p50 and p99 per group (mean +- se over seeds)."""
    metrics = [m for m in ("latency_p50_ms", "latency_p99_ms") if m in family_obj["summary"]]
    if not any(stat_mean(group_stats(family_obj, m, gid)) is not None for m in metrics for gid in family_obj["groups"]):
        message_axes(fig.add_subplot(), f"{family}: latency unavailable\n(no latency_p50_ms / latency_p99_ms values)")
        return
    ax = _grouped_bars(fig, family_obj, metrics, (None, "//"))
    ax.set_ylabel("latency per sample (ms, batch 1)")
    set_title(ax, f"{family}: batch-1 inference latency, p50 and p99\n(lower is better), mean ± se over seeds")


def draw_energy(fig: Figure, family: str, family_obj: dict) -> None:
    """Energy per test sample; the words 'unavailable (no counter)' instead of bars when null."""
    metrics = _energy_metrics(family_obj)
    sources = "; ".join(ENERGY_SOURCE_LABELS.get(s, s) for s in family_obj["energy_sources"])
    if not any(stat_mean(group_stats(family_obj, m, gid)) is not None for m in metrics for gid in family_obj["groups"]):
        reasons = "\n".join(_energy_reasons(family_obj)) or "no energy metric recorded"
        sources = family_obj["energy_sources"]
        headline = missing_energy_text(sources[0] if len(sources) == 1 else "mixed", family_obj.get("energy_flags", []))
        message_axes(fig.add_subplot(), f"energy: {headline}\n\n{reasons}")
        fig.axes[0].set_title(f"{family}: energy per test sample")
        return
    ax = _grouped_bars(fig, family_obj, metrics, (None, "//", "xx"))
    ax.set_ylabel("energy (J per test sample)")
    set_title(ax, f"{family}: energy per test sample (lower is better), mean ± se\nsource: {sources}")


def draw_metric_table(fig: Figure, family: str, family_obj: dict) -> None:
    """All scalar metrics (rows) per group (columns): mean ± se (n); best per row in bold."""
    group_ids = _group_ids(family_obj)
    metrics = list(family_obj["summary"])
    rows, row_labels = _table_rows(family_obj, group_ids, metrics)
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=rows, rowLabels=row_labels, bbox=(0.2, 0.0, 0.8, 1.0), cellLoc="center",
                     colLabels=[_group_label(family_obj["groups"][g], multiline=False) for g in group_ids])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for row, metric in enumerate(metrics, start=len(rows) - len(metrics) + 1):
        best = _best_column(family_obj, metric, group_ids)
        if best is not None:
            table[row, best].set_text_props(fontweight="bold")
    ax.set_title(f"{family}: all metrics, mean ± se (n seeds); ↑ higher / ↓ lower is better; bold = best", pad=12)


def _table_rows(family_obj: dict, group_ids: list[str], metrics: list[str]) -> tuple[list[list[str]], list[str]]:
    groups = family_obj["groups"]
    rows = [
        [", ".join(str(s) for s in groups[g]["seeds"]) for g in group_ids],
        [groups[g]["energy_source"] for g in group_ids],
    ]
    labels = ["seeds", "energy source"]
    arrows = {"maximize": " ↑", "minimize": " ↓"}
    for metric in metrics:
        rows.append([_table_cell(family_obj, metric, g) for g in group_ids])
        labels.append(metric + arrows.get(family_obj["metric_directions"].get(metric), ""))
    return rows, labels


def _table_cell(family_obj: dict, metric: str, group_id: str) -> str:
    stats = group_stats(family_obj, metric, group_id)
    if stats is None or stats["mean"] is None:
        return _missing_text(stats, metric)
    spread = f" ± {format_value(stats['se'])}" if stats["se"] is not None else ""
    text = f"{format_value(stats['mean'])}{spread} ({stats['n']})"
    if _is_unmeasured_energy(metric, stats["energy_source"]):
        text += f" [{stats['energy_source']}]"
    return text


def _best_column(family_obj: dict, metric: str, group_ids: list[str]) -> int | None:
    direction = family_obj["metric_directions"].get(metric)
    means = [(i, stat_mean(group_stats(family_obj, metric, g))) for i, g in enumerate(group_ids)]
    means = [(i, m) for i, m in means if m is not None]
    if direction is None or len(means) < 2:
        return None
    sign = 1.0 if direction == MAXIMIZE else -1.0
    ranked = sorted(means, key=lambda item: -sign * item[1])
    # Bold only a strict winner: bolding one of several equal means would mislead.
    return ranked[0][0] if ranked[0][1] != ranked[1][1] else None


# ---------------------------------------------------------------- method x budget table

REFERENCE_METHOD = "lora"  # training time is a ratio to this method's, else to the first baseline's
CLASSIFICATION_METRICS = ("accuracy", "mcc")
SHORT_METRIC_LABELS = {"accuracy": "acc", "mcc": "MCC", "macro_f1": "F1", "rouge1": "ROUGE-1",
                       "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
METHOD_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442")
NOT_RUN = "not run"


def reference_method(family_obj: dict) -> tuple[str | None, str]:
    """(the method training times are compared with, why that one)."""
    methods = methods_in_order(family_obj)
    if REFERENCE_METHOD in methods:
        return REFERENCE_METHOD, f"the family has {REFERENCE_METHOD}"
    roles = {prov["method"]: prov["role"] for prov in family_obj["groups"].values()}
    baselines = [m for m in methods if roles[m] == "baseline"]
    if baselines:
        return baselines[0], f"no {REFERENCE_METHOD} in this family: its first baseline"
    return None, f"no {REFERENCE_METHOD} and no baseline in this family"


def _table_metrics(family_obj: dict) -> list[str]:
    """The primary metric; for classification, accuracy and MCC where present (in that order)."""
    primary = family_obj["primary_metric"]
    tasks = {run.get("task") for run in family_obj["runs"].values()}
    if "classification" not in tasks and primary not in (*CLASSIFICATION_METRICS, "macro_f1"):
        return [primary]
    extra = [m for m in CLASSIFICATION_METRICS if m in family_obj["summary"]]
    return extra if primary in extra else [primary, *extra]


def _mean_se_text(family_obj: dict, metric: str, group_id: str) -> str:
    """'acc 77.3 ± 1.3' (accuracy in percent), 'MCC 0.54 ± 0.02', else format_value."""
    label = SHORT_METRIC_LABELS.get(metric, metric)
    stats = group_stats(family_obj, metric, group_id)
    if stats is None or stats["mean"] is None:
        return f"{label} {_missing_text(stats, metric)}"
    spread = f" ± {_table_number(metric, stats['se'])}" if stats["se"] is not None else ""
    return f"{label} {_table_number(metric, stats['mean'])}{spread}"


def _table_number(metric: str, value: float) -> str:
    if metric == "accuracy":
        return f"{100.0 * value:.1f}"  # percent, one decimal
    if metric == "mcc":
        return f"{value:.2f}"
    return format_value(value)


def _time_ratio_text(family_obj: dict, group_id: str, reference: str | None) -> str:
    if reference is None:
        return "time: no reference"
    ref_gid = group_at(family_obj, reference, family_obj["groups"][group_id]["budget"])
    if ref_gid is None:
        return f"time n/a (no {reference} at this budget)"
    own = stat_mean(group_stats(family_obj, "train_time_s", group_id))
    ref = stat_mean(group_stats(family_obj, "train_time_s", ref_gid))
    if own is None or ref is None or ref <= 0:
        return f"time {UNAVAILABLE}"
    return f"time {own / ref:.2f}×"


def method_budget_table(family_obj: dict) -> dict:
    """The results table: {methods, budgets, reference, reference_note, metrics, cells, best},
    cells[i][j] the text for methods[i] at budgets[j]; best[j] the row of the strictly best
    primary-metric mean at budgets[j] (None without a strict winner)."""
    methods, budgets = methods_in_order(family_obj), budgets_in_order(family_obj)
    reference, note = reference_method(family_obj)
    metrics = _table_metrics(family_obj)
    primary = family_obj["primary_metric"]
    cells, best = [], []
    for method in methods:
        row = []
        for budget in budgets:
            gid = group_at(family_obj, method, budget)
            if gid is None:
                row.append(NOT_RUN)
                continue
            n = (group_stats(family_obj, primary, gid) or {}).get("n", 0)
            values = " / ".join(_mean_se_text(family_obj, m, gid) for m in metrics)
            row.append(f"{values}\nn={n} · {_time_ratio_text(family_obj, gid, reference)}")
        cells.append(row)
    for budget in budgets:
        column = [group_at(family_obj, method, budget) for method in methods]
        present = [gid for gid in column if gid is not None]
        winner = _best_column(family_obj, primary, present)
        best.append(None if winner is None else column.index(present[winner]))
    return {"methods": methods, "budgets": budgets, "reference": reference, "reference_note": note,
            "metrics": metrics, "cells": cells, "best": best}


def draw_method_budget_table(fig: Figure, family: str, family_obj: dict) -> None:
    """Methods (rows) x budgets (columns): primary metric (accuracy and MCC for classification),
    mean ± se over seeds with n, and training time relative to the reference method."""
    data = method_budget_table(family_obj)
    roles = {prov["method"]: prov["role"] for prov in family_obj["groups"].values()}
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=data["cells"], rowLabels=[f"{m} [{roles[m]}]" for m in data["methods"]],
                     colLabels=[budget_text(b) for b in data["budgets"]], bbox=(0.0, 0.0, 1.0, 1.0),
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    for col, row in enumerate(data["best"]):
        if row is not None:
            table[row + 1, col].set_text_props(fontweight="bold")
    primary = family_obj["primary_metric"]
    shown = " and ".join(SHORT_METRIC_LABELS.get(m, m) for m in data["metrics"])
    percent = " (accuracy in %)" if "accuracy" in data["metrics"] else ""
    reference = data["reference"]
    time_text = (f"time: mean training time ÷ the reference method's at the same budget; "
                 f"reference: {reference} ({data['reference_note']})" if reference
                 else f"time ratio: {data['reference_note']}")
    set_title(ax, f"{family}: {shown}{percent} by method and adapter budget, mean ± se over seeds (n)\n"
                   f"{time_text}\nbold: best {primary}{_direction_note(family_obj, primary)} per budget",
               width=int(10.5 * fig.get_figwidth()))


# ---------------------------------------------------------------- per-module figures

DELTA_NORM_LABEL = "‖ΔW‖_F (merged − base)"
MAX_DELTA_PANELS = 24  # more budgets x module types than this: the largest budget alone
ANNOTATE_CELLS = 120  # importance values are written into heat-map cells up to this many per panel


def _method_colors(family_obj: dict) -> dict[str, str]:
    return {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods_in_order(family_obj))}


def _outside_note(grid: LayerGrid) -> str:
    if not grid.outside:
        return ""
    names = ", ".join(grid.outside[:3]) + (", ..." if len(grid.outside) > 3 else "")
    return f"\nnot shown: {len(grid.outside)} module(s) outside numbered layers ({names})"


def _importance_layout(family_obj: dict) -> tuple[list[str], list, dict, LayerGrid]:
    stats, grid = family_module_stats(family_obj, "importance")
    group_ids = list(stats)
    return methods_in_order(family_obj, group_ids), budgets_in_order(family_obj, group_ids), stats, grid


def draw_importance(fig: Figure, family: str, family_obj: dict) -> None:
    """Heat map of importance I_m (mean over seeds) per layer and module type: one panel per
    method that reports it and budget; a sentence instead when no method reports it."""
    methods, budgets, stats, grid = _importance_layout(family_obj)
    title = f"{family}: per-module importance I_m by layer and module type"
    if not stats:
        no_data(fig, title, f"no method in family {family} reports per-module importance I_m\n"
                                    f"(methods: {', '.join(methods_in_order(family_obj))})")
        return
    if not grid.types:
        no_data(fig, title, "importance is reported only for modules outside numbered layers"
                                    f"{_outside_note(grid)}")
        return
    gs = fig.add_gridspec(len(methods), len(budgets) + 1, width_ratios=[1.0] * len(budgets) + [0.05])
    # One colour scale for all panels, over the modules drawn: a module off the grid (the
    # pooler can hold most of the total) would otherwise wash every cell out.
    means = [100.0 * s["mean"] for per_group in stats.values() for name, s in per_group.items()
             if s["mean"] is not None and name not in grid.outside]
    vmax = max(means, default=0.0) or 1.0
    image = None
    for row, method in enumerate(methods):
        for col, budget in enumerate(budgets):
            ax = fig.add_subplot(gs[row, col])
            gid = group_at(family_obj, method, budget, list(stats))
            if gid is None:
                message_axes(ax, f"{method}, {budget_text(budget)}:\nno importance reported")
                continue
            image = _importance_panel(ax, grid, stats[gid], vmax)
            n = max((s["n"] for s in stats[gid].values()), default=0)
            ax.set_title(f"{method}, {budget_text(budget)} (n={n} seeds)", fontsize=8)
            if row == len(methods) - 1:
                ax.set_xlabel("module type")
            if col == 0:
                ax.set_ylabel("layer index (0 = nearest the input)")
    if image is not None:
        colorbar = fig.colorbar(image, cax=fig.add_subplot(gs[:, -1]))
        colorbar.set_label("importance I_m (% of the run's total; mean over seeds)")
    off_grid = "; ".join(
        f"{gid.split('--', 1)[1]} {name}: {100.0 * stat['mean']:.1f}%"
        for gid, per_group in stats.items() for name, stat in per_group.items()
        if name in grid.outside and stat["mean"] is not None
    )
    fig.suptitle(f"{title}\n(grey: not reported){_outside_note(grid)}"
                 + (f"\n{off_grid}" if off_grid else ""), fontsize=10)


def _importance_panel(ax: Axes, grid: LayerGrid, module_stats: dict, vmax: float):
    values = np.full((grid.n_layers, len(grid.types)), np.nan)
    for (layer, kind), stats in grid.cells(module_stats).items():
        if stats["mean"] is not None:
            values[layer, grid.types.index(kind)] = 100.0 * stats["mean"]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=vmax, origin="lower",
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(grid.types)))
    ax.set_xticklabels(grid.types, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(grid.n_layers))
    if values.size <= ANNOTATE_CELLS:
        for (layer, col), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(col, layer, f"{value:.1f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 * vmax else "black")
    return image


def _delta_layout(family_obj: dict) -> tuple[list[str], list, str, dict, LayerGrid]:
    """(methods, budgets shown, note on the budgets, stats per group, grid)."""
    stats, grid = family_module_stats(family_obj, "delta_norm", absent=0.0)
    group_ids = list(stats)
    budgets = budgets_in_order(family_obj, group_ids)
    note = ""
    if len(budgets) > 1 and len(budgets) * len(grid.types) > MAX_DELTA_PANELS:
        note = f"largest budget only ({len(budgets)} budgets x {len(grid.types)} module types would not fit)"
        budgets = budgets[-1:]
    return methods_in_order(family_obj, group_ids), budgets, note, stats, grid


def draw_delta_norm(fig: Figure, family: str, family_obj: dict) -> None:
    """‖ΔW_m‖_F per layer after training: one line per method (mean over seeds, ± se shaded
    where n >= 2), one panel per module type and budget."""
    methods, budgets, note, stats, grid = _delta_layout(family_obj)
    title = f"{family}: weight change per layer, {DELTA_NORM_LABEL}"
    if not grid.types:
        reason = (f"no run in family {family} recorded per-module weight changes\n"
                  "(unavailable: no per_module.delta_norm in its metrics.json files)" if not stats
                  else "weight changes only outside numbered layers" + _outside_note(grid))
        no_data(fig, title, reason)
        return
    colors = _method_colors(family_obj)
    axes = fig.subplots(len(budgets), len(grid.types), squeeze=False)
    for row, budget in enumerate(budgets):
        for col, kind in enumerate(grid.types):
            ax = axes[row][col]
            drawn = [
                _delta_line(ax, grid, stats[gid], kind, method, colors[method])
                for method in methods
                if (gid := group_at(family_obj, method, budget, list(stats))) is not None
            ]
            if not any(drawn):
                message_axes(ax, "no data")
            else:
                ax.set_ylim(bottom=0.0)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{kind}\n{budget_text(budget)}", fontsize=8)
            if row == len(budgets) - 1:
                ax.set_xlabel("layer index")
            if col == 0:
                ax.set_ylabel(DELTA_NORM_LABEL)
    axes[0][-1].legend(handles=[Line2D([], [], color=colors[m], marker="o", ms=3, label=m) for m in methods],
                       title="method", loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7)
    shown = f"; {note}" if note else ""
    fig.suptitle(f"{title}\nmean over seeds, shaded ± se where n >= 2; modules a method left unchanged count as 0"
                 f"{shown}{_outside_note(grid)}", fontsize=10)


def _delta_line(ax: Axes, grid: LayerGrid, module_stats: dict, kind: str, method: str, color: str) -> bool:
    cells = grid.cells(module_stats)
    points = sorted(((layer, s) for (layer, k), s in cells.items() if k == kind and s["mean"] is not None),
                    key=lambda point: point[0])
    if not points:
        return False
    layers = np.array([layer for layer, _ in points], dtype=float)
    means = np.array([s["mean"] for _, s in points])
    ses = np.array([s["se"] if s["se"] is not None else np.nan for _, s in points])
    ax.plot(layers, means, marker="o", ms=3, lw=1.2, color=color, label=method)
    shaded = ~np.isnan(ses)
    if shaded.any():
        ax.fill_between(layers, means - np.nan_to_num(ses), means + np.nan_to_num(ses), where=shaded,
                        color=color, alpha=0.2, linewidth=0)
    return True


# A kind draws onto the figure and may return a note for the footer (what the data is).
FigureKind = Callable[[Figure, str, dict], "str | None"]
# draw_<kind> from this module, or from spectral.py / hardware.py / continual.py for their kinds.
KIND_MODULES = (spectral, hardware, continual)


def _draw_function(kind: str) -> FigureKind:
    namespaces = (globals(), *(vars(module) for module in KIND_MODULES))
    return next(space[f"draw_{kind}"] for space in namespaces if f"draw_{kind}" in space)


FIGURES: dict[str, FigureKind] = {kind: _draw_function(kind) for kind in FIGURE_KINDS}


# ---------------------------------------------------------------- saving


def _figure_size(kind: str, family_obj: dict) -> tuple[float, float]:
    for module in KIND_MODULES:
        if kind in module.FIGURE_SIZES:
            return module.FIGURE_SIZES[kind](family_obj)
    n_groups = len(family_obj["groups"])
    if kind == "metric_table":
        return (max(7.0, 2.0 + 2.2 * n_groups), 1.0 + 0.25 * (len(family_obj["summary"]) + 3))
    if kind == "method_budget_table":
        return (max(8.0, 2.0 + 3.2 * len(budgets_in_order(family_obj))), 1.6 + 0.55 * (len(methods_in_order(family_obj)) + 1))
    if kind == "importance":
        methods, budgets, _, grid = _importance_layout(family_obj)
        if grid.types:
            return (max(6.5, 1.6 + len(budgets) * (1.0 + 0.45 * len(grid.types))),
                    max(4.6, 2.0 + len(methods) * (1.2 + min(0.3 * grid.n_layers, 6.0))))
    if kind == "delta_norm":
        _, budgets, _, _, grid = _delta_layout(family_obj)
        if grid.types:
            return (max(6.5, 2.4 + 2.3 * len(grid.types)), 1.6 + 2.3 * len(budgets))
    return (max(6.5, 2.6 + 1.5 * n_groups), 4.6)


@contextlib.contextmanager
def _figure(size: tuple[float, float]) -> Iterator[Figure]:
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)  # Agg explicitly: never a GUI backend, whatever pyplot was set to
        yield fig


def save_figure(fig: Figure, out_stem: Path) -> list[Path]:
    """Write {out_stem}.pdf and {out_stem}.png; neither appears until both are written."""
    out_stem = Path(out_stem)
    pdf, png = out_stem.with_name(out_stem.name + ".pdf"), out_stem.with_name(out_stem.name + ".png")
    with atomic_path(pdf) as tmp_pdf, atomic_path(png) as tmp_png:
        fig.savefig(tmp_pdf, format="pdf", metadata=PDF_METADATA)
        fig.savefig(tmp_png, format="png", dpi=PNG_DPI)
    return [pdf, png]


def figure_names(family_obj: dict) -> list[str]:
    """Figure kinds for a family. Every kind can be drawn for every family (missing data
    is shown as 'unavailable'), so Snakemake can list targets without a checkpoint."""
    for key in ("summary", "groups", "primary_metric"):
        if key not in family_obj:
            raise KeyError(f"not a per-family aggregated object: missing {key!r}")
    return list(FIGURES)


def make_figure(kind: str, family: str, aggregated: dict, out_stem: Path) -> list[Path]:
    """Draw figure `kind` for `family` into {out_stem}.pdf and {out_stem}.png."""
    if kind not in FIGURES:
        raise KeyError(f"unknown figure kind {kind!r}; known: {sorted(FIGURES)}")
    family_obj = family_data(aggregated, family)
    with _figure(_figure_size(kind, family_obj)) as fig:
        note = FIGURES[kind](fig, family, family_obj)
        lines = textwrap.wrap(note, int(19 * fig.get_figwidth())) if note else []
        fig.text(0.01, 0.01, "\n".join([*lines, _footer_text(family_obj)]), fontsize=6.5, color="#444444",
                 ha="left", va="bottom")
        # Room for the footer: one line of 6.5 pt text is about 0.115 inch.
        bottom = 0.035 if not lines else (0.04 + 0.115 * (len(lines) + 1)) / fig.get_figheight()
        fig.tight_layout(rect=(0, bottom, 1, 1))
        return save_figure(fig, out_stem)


# ---------------------------------------------------------------- learning curve

EVAL_METRIC_PREFERENCE = ("accuracy", "rougeL", "mcc", "macro_f1", "rouge1", "rouge2")
NON_METRIC_KEYS = {"step", "epoch", "split", "eval_loss", "elapsed_s", "lr", "grad_norm", "loss"}


def read_train_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records with a loss, evaluation records) from a trainer JSONL log."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log missing: {path}")
    train, evals = [], []
    with open(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err
            if "split" in record:
                evals.append(record)
            elif record.get("loss") is not None:
                train.append(record)
    return train, evals


def _eval_metric(evals: list[dict]) -> str | None:
    keys = {k for record in evals for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    keys -= NON_METRIC_KEYS
    preferred = [k for k in EVAL_METRIC_PREFERENCE if k in keys]
    return preferred[0] if preferred else (sorted(keys)[0] if keys else None)


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None and r.get("step") is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _annotate_last(ax: Axes, steps: list[float], values: list[float], color: str) -> None:
    if steps:
        ax.annotate(f"{format_value(values[-1])}", (steps[-1], values[-1]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, color=color)


def plot_learning_curve(train_log_jsonl: Path, out_stem: Path, title: str) -> list[Path]:
    """Training loss vs optimiser step, evaluation loss, and an evaluation metric on a twin axis."""
    train, evals = read_train_log(train_log_jsonl)
    with _figure((7.0, 4.2)) as fig:
        ax = fig.add_subplot()
        if not train and not evals:
            message_axes(ax, "no training or evaluation records logged\n(run shorter than log_every?)")
            ax.set_title(title)
        else:
            _draw_curves(ax, train, evals)
            ax.set_title(title)
        fig.tight_layout()
        return save_figure(fig, out_stem)


def _draw_curves(ax: Axes, train: list[dict], evals: list[dict]) -> None:
    handles = []
    steps, loss = _series(train, "loss")
    if steps:
        handles += ax.plot(steps, loss, color=SERIES_COLORS[0], lw=1.2, label="training loss")
        _annotate_last(ax, steps, loss, SERIES_COLORS[0])
    eval_steps, eval_loss = _series(evals, "eval_loss")
    if eval_steps:
        handles += ax.plot(eval_steps, eval_loss, "o--", color=SERIES_COLORS[1], label="evaluation loss")
        _annotate_last(ax, eval_steps, eval_loss, SERIES_COLORS[1])
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss (cross-entropy, nats)")
    metric = _eval_metric(evals)
    if metric is not None:
        twin = ax.twinx()
        metric_steps, metric_values = _series(evals, metric)
        handles += twin.plot(metric_steps, metric_values, "s-", color=SERIES_COLORS[2], label=f"evaluation {metric}")
        _annotate_last(twin, metric_steps, metric_values, SERIES_COLORS[2])
        twin.set_ylabel(metric_label(metric))
        twin.margins(y=0.1)  # room for the last-value label
    if not steps:
        ax.text(0.5, 0.95, "no training-loss records (run shorter than log_every)", transform=ax.transAxes,
                ha="center", va="top", fontsize=8, color="#555555")
    ax.margins(y=0.1)
    # Below the axes: two y-axes leave no corner that is reliably free of curves.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
