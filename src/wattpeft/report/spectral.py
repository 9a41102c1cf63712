"""Figures for gated spectral adapters (seeds 000/001: HEST, TABS) beside their baselines.

* `gate_utilisation`: one heat map per gated group (method at a budget), side by side:
  layers (depth) x gate states, colour = share of (token, direction) pairs in that state,
  from `per_layer.gate_utilisation` of the hardened gates on the test prompts, mean over seeds
  (aggregated_metrics.json: `gate_utilisation`, made by report.layers).
* `spectral_table`: one row per group: the primary metric (mean ± s.e., n), modelled energy per
  sample (whole forward and adapter path: priced by the energy table, labelled so, never
  passed off as measured), measured energy with its source, p99 latency, controller
  parameters and the adapter's largest share of a forward pass's FLOPs.

Both are generic: they draw whatever groups carry the data, and say in words that there is no
data otherwise (a family without gated methods, runs that predate the energy model).
Each draw function returns a footer note that make_figure prints above the energy footer.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wattpeft.report.aggregate import MAXIMIZE, combined_energy_source, energy_table_source
from wattpeft.report.drawing import (
    UNAVAILABLE,
    budget_text,
    budgets_in_order,
    draw_table_figure,
    energy_source_label,
    format_value,
    group_stats,
    methods_in_order,
    metric_label,
    missing_energy_text,
    no_data,
)
from wattpeft.report.stats import is_number

# ---------------------------------------------------------------- gate utilisation

GATE_STATE_LABELS = {"off": "off\n(skipped)", "int8": "int8", "fp16": "fp16"}
ANNOTATE_GATE_CELLS = 150  # shares are written into the cells of a panel up to this many
GATES_NOTE = ("hardened gates (argmax per token and direction) on the test prompts, one batch-1 prefill pass per "
              "prompt; each row: share of (token, direction) pairs in each state (sums to 100%), mean over seeds")


def _group_title(family_obj: dict, group_id: str, with_budget: bool) -> str:
    prov = family_obj["groups"][group_id]
    budget = f", {budget_text(prov['budget'])}" if with_budget else ""
    return f"{prov['method']} [{prov['role']}]{budget}"


def draw_gate_utilisation(fig: Figure, family: str, family_obj: dict) -> str | None:
    """Layers x gate states per gated group: the share of (token, direction) pairs in each
    state, mean over seeds; a sentence instead when no group of the family has gates."""
    utilisation = family_obj.get("gate_utilisation") or {}
    title = f"{family}: gate utilisation by layer"
    if not utilisation:
        no_data(fig, title, f"no data: no method in family {family} has gates\n"
                            f"(methods: {', '.join(methods_in_order(family_obj))}; "
                            "gated methods such as HEST and TABS report it)")
        return None
    group_ids = list(utilisation)
    with_budget = len(budgets_in_order(family_obj, group_ids)) > 1
    gs = fig.add_gridspec(1, len(group_ids) + 1, width_ratios=[1.0] * len(group_ids) + [0.06])
    image = None
    for col, gid in enumerate(group_ids):
        ax = fig.add_subplot(gs[0, col])
        image = _gate_panel(ax, utilisation[gid])
        data = utilisation[gid]
        seeds = "seed" if data["n"] == 1 else "seeds"
        ax.set_title(f"{_group_title(family_obj, gid, with_budget)}\nn={data['n']} {seeds}", fontsize=9)
        ax.set_xlabel("gate state")
        if col == 0:
            ax.set_ylabel("layer (0 = nearest the input)")
    colorbar = fig.colorbar(image, cax=fig.add_subplot(gs[0, -1]))
    colorbar.set_label("share of (token, direction) pairs (%)")
    methods = ", ".join(family_obj["groups"][gid]["method"] for gid in group_ids)
    fig.suptitle(f"{title}: {methods}\nshare of (token, direction) pairs in each gate state, per layer", fontsize=10)
    return GATES_NOTE


def _gate_panel(ax: Axes, data: dict):
    states, n_layers = data["states"], data["n_layers"]
    values = 100.0 * np.array([data["mean"][state] for state in states], dtype=float).T  # layers x states
    image = ax.imshow(values, cmap=matplotlib.colormaps["viridis"], vmin=0.0, vmax=100.0, origin="lower",
                      aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(states)))
    ax.set_xticklabels([GATE_STATE_LABELS.get(s, s) for s in states], fontsize=8)
    step = 1 if n_layers <= 32 else int(np.ceil(n_layers / 32))
    ax.set_yticks(range(0, n_layers, step))
    ax.tick_params(axis="y", labelsize=6 if n_layers > 16 else 8)
    if values.size <= ANNOTATE_GATE_CELLS:
        for (layer, col), value in np.ndenumerate(values):
            ax.text(col, layer, f"{value:.0f}", ha="center", va="center", fontsize=5.5 if n_layers > 16 else 7,
                    color="white" if value < 60.0 else "black")
    return image


def gate_utilisation_size(family_obj: dict) -> tuple[float, float]:
    utilisation = family_obj.get("gate_utilisation") or {}
    if not utilisation:
        return (6.5, 4.6)
    n_layers = max(data["n_layers"] for data in utilisation.values())
    return (max(6.5, 1.6 + 2.6 * len(utilisation)), 2.6 + min(0.2 * n_layers, 8.0))


# ---------------------------------------------------------------- per-method table

MEASURED_ENERGY = "energy_j_per_sample"
MODELLED_FORWARD, MODELLED_ADAPTER = "modelled_j_per_sample", "modelled_adapter_j_per_sample"
LATENCY, CONTROLLER, FLOP_SHARE = "latency_p99_ms", "controller_params", "adapter_flop_share_max"
# Without one of these in any group there is nothing spectral to tabulate.
SPECTRAL_METRICS = (MODELLED_FORWARD, MODELLED_ADAPTER, CONTROLLER, FLOP_SHARE)
SI_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))


def joules(value: float | None, se: float | None = None) -> str:
    """'20.92 ± 0.01 mJ': four significant digits, one SI prefix (from the value) for both."""
    if value is None:
        return UNAVAILABLE
    if value == 0:
        return "0 J"
    scale, prefix = next(((s, p) for s, p in SI_PREFIXES if abs(value) >= s), SI_PREFIXES[-1])
    spread = f" ± {se / scale:.3g}" if se is not None else ""
    return f"{value / scale:.4g}{spread} {prefix}J"


def _mean_se(stats: dict | None, fmt) -> str:
    if stats is None or stats["mean"] is None:
        return UNAVAILABLE
    spread = f" ± {fmt(stats['se'])}" if stats["se"] is not None else ""
    return f"{fmt(stats['mean'])}{spread}"


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _percent(value: float) -> str:
    return f"{100.0 * value:.2f}%"


def table_source(family_obj: dict) -> str | None:
    """The energy table behind the family's modelled numbers: 'default', 'measured', 'mixed: ...'."""
    return energy_table_source(family_obj.get("energy_tables") or [])


def _modelled_cell(family_obj: dict, metric: str, group_id: str, family_table: str | None) -> str:
    text = joules(*_stat_pair(group_stats(family_obj, metric, group_id)))
    own = family_obj["groups"][group_id].get("energy_table")
    if text != UNAVAILABLE and own and own != family_table:
        text += f"\n[table: {own}]"  # a group priced by another table than the header says
    return text


def _stat_pair(stats: dict | None) -> tuple[float | None, float | None]:
    return (None, None) if stats is None else (stats["mean"], stats["se"])


def _measured_cell(family_obj: dict, group_id: str) -> str:
    stats = group_stats(family_obj, MEASURED_ENERGY, group_id)
    if stats is None:
        return UNAVAILABLE
    if stats["mean"] is None:
        return missing_energy_text(stats["energy_source"], stats.get("energy_flags", []))
    return f"{joules(stats['mean'], stats['se'])}\n{energy_source_label(stats['energy_source'])}"


def _primary_cell(family_obj: dict, group_id: str) -> str:
    stats = group_stats(family_obj, family_obj["primary_metric"], group_id)
    if stats is None or stats["mean"] is None:
        return f"{UNAVAILABLE} (n={0 if stats is None else stats['n']})"
    return f"{_mean_se(stats, format_value)}\n(n={stats['n']})"


def spectral_table(family_obj: dict) -> dict:
    """{columns, rows, cells, table_source, has_data}: cells[i][j] the text of group rows[i] in
    column j; has_data False when no group carries any of SPECTRAL_METRICS."""
    primary = family_obj["primary_metric"]
    direction = family_obj["metric_directions"].get(primary)
    arrow = {MAXIMIZE: " ↑"}.get(direction, " ↓" if direction else "")
    source = table_source(family_obj)
    modelled = f"modelled (table: {source or 'none recorded'})"
    measured_sources = combined_energy_source(family_obj["energy_sources"])
    columns = [
        f"{metric_label(primary)}{arrow}\nmean ± s.e. (n)",
        f"energy / sample,\nwhole forward\n{modelled}",
        f"energy / sample,\nadapter path\n{modelled}",
        f"energy / sample,\nmeasured\n(source: {measured_sources})",
        "p99 latency\n(ms, batch 1)",
        "controller\nparameters",
        "adapter share of\nforward FLOPs,\nevery direction on",
    ]
    group_ids = list(family_obj["groups"])
    with_budget = len(budgets_in_order(family_obj)) > 1
    cells = []
    for gid in group_ids:
        cells.append([
            _primary_cell(family_obj, gid),
            _modelled_cell(family_obj, MODELLED_FORWARD, gid, source),
            _modelled_cell(family_obj, MODELLED_ADAPTER, gid, source),
            _measured_cell(family_obj, gid),
            _mean_se(group_stats(family_obj, LATENCY, gid), lambda v: f"{v:.1f}"),
            _mean_se(group_stats(family_obj, CONTROLLER, gid), _count),
            _mean_se(group_stats(family_obj, FLOP_SHARE, gid), _percent),
        ])
    has_data = any((group_stats(family_obj, metric, gid) or {}).get("mean") is not None
                   for metric in SPECTRAL_METRICS for gid in group_ids)
    return {"columns": columns, "rows": [_group_title(family_obj, gid, with_budget) for gid in group_ids],
            "group_ids": group_ids, "cells": cells, "table_source": source, "has_data": has_data}


def energy_table_note(family_obj: dict) -> str:
    """Which table priced the modelled numbers: its source, reference and J/FLOP."""
    tables = family_obj.get("energy_tables") or []
    if not tables:
        return "modelled energy: no energy table recorded in these runs"
    described = []
    for table in tables:
        prices = ", ".join(f"{k} {v:.3g} J/FLOP" for k, v in (table.get("j_per_flop") or {}).items() if is_number(v))
        described.append(f"energy table '{table.get('source')}' ({prices}): {table.get('reference') or 'no reference'}")
    return ("modelled = FLOPs priced by an energy table, not a measurement; " + "; ".join(described))


def draw_spectral_table(fig: Figure, family: str, family_obj: dict) -> str | None:
    """Per group: primary metric, modelled energy (whole forward, adapter path), measured energy
    with its source, p99 latency, controller parameters and the adapter's FLOP share."""
    data = spectral_table(family_obj)
    drawn = draw_table_figure(
        fig, data, f"{family}: quality, energy, latency and controller size per method",
        f"mean ± s.e. over seeds; modelled = priced by the energy table "
        f"({data['table_source'] or 'none recorded'}), not measured",
        f"no data: no run in family {family} reports modelled energy or gate "
        f"controllers\n(none of {', '.join(SPECTRAL_METRICS)})")
    return energy_table_note(family_obj) if drawn else None


def spectral_table_size(family_obj: dict) -> tuple[float, float]:
    if not spectral_table(family_obj)["has_data"]:
        return (6.5, 4.6)
    return (13.0, 2.4 + 0.55 * (len(family_obj["groups"]) + 1))


FIGURE_SIZES = {"gate_utilisation": gate_utilisation_size, "spectral_table": spectral_table_size}
