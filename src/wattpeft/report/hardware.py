"""Figures for hardware-surrogate families (seed 002: EChorda, MetaS-PEFT, DiGASE beside their
baselines), from what their aggregated_metrics.json holds beyond the usual keys.

* `surrogate_accuracy`: one panel per cost target (energy, latency, peak power): MAPE (%) of
  each predictor (meta-surrogate, ridge regressions on 5 and 200 rows) per held-out device,
  from `surrogate_evaluation` (surrogate/evaluate.py, one record per device, predictor and
  target). Devices are grouped by source; simulated ones are hatched, labelled SIMULATED and
  set apart: a surrogate scored on the roofline model's rows may have learnt the simulator
  back. An unavailable cell is an empty slot with a numbered footnote (its reason).
* `hardware_table`: one row per group: the primary metric, the export's energy, latency and
  peak power on the family's unseen device (labelled with their source), the normalised 4-D
  hypervolume (`hypervolume_4d`, report/aggregate.add_hypervolumes) and the on-device
  measurements the method used; the hypervolume's reference point in the footer.

A family without this data gets the sentence the spectral kinds draw (drawing.no_data).
"""

from __future__ import annotations

import re
import textwrap

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from wattpeft.report.aggregate import MAXIMIZE, UNSEEN_COSTS
from wattpeft.report.drawing import (
    UNAVAILABLE,
    budget_text,
    budgets_in_order,
    draw_table_figure,
    energy_source_label,
    format_value,
    group_stats,
    metric_label,
    no_data,
    set_title,
)
from wattpeft.report.spectral import _count, _mean_se
from wattpeft.report.stats import is_number

SIMULATED = "simulated"
SOURCE_ORDER = ("measured", "imported", SIMULATED)  # real devices first, the simulated ones apart
TARGETS = {"energy_j": "energy per forward pass", "latency_ms": "latency", "peak_power_w": "peak power"}
PREDICTOR_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7")
SIMULATED_HATCH = "//"
LOG_SCALE_RATIO = 20.0  # MAPEs spanning more than this factor in a panel: log y axis
REASON_CHARS = 90  # an unavailable cell's reason is shortened to this in the footnote
SIMULATOR_NOTE = ("simulated devices: roofline model, not measurements; a surrogate that is scored on simulated "
                  "devices may have learnt the simulator back")


# ---------------------------------------------------------------- surrogate accuracy


def predictor_label(name: str, short: bool = False) -> str:
    """'meta_surrogate_5shot' -> 'meta-surrogate, 5-shot'; 'regression_200' -> 'ridge regression,
    200 rows' ('ridge, 200 rows' when short)."""
    if match := re.fullmatch(r"meta_surrogate_(\d+)shot", name):
        return f"meta-surrogate, {match[1]}-shot"
    if match := re.fullmatch(r"regression_(\d+)", name):
        return f"ridge{'' if short else ' regression'}, {match[1]} rows"
    return name


def unseen_devices(family_obj: dict) -> list[str]:
    """The family's unseen device(s), as the hypervolume frame names them ([] without one)."""
    return list((family_obj.get("hypervolume") or {}).get("device") or [])


def _scored(record: dict) -> bool:
    return not record.get("unavailable") and is_number(record.get("mape_pct"))


def _devices(records: list[dict]) -> list[tuple[str, str]]:
    """(device, source), measured then imported then simulated, each in first-seen order."""
    devices = dict.fromkeys((r["held_out_device"], r["device_source"]) for r in records)
    rank = {source: i for i, source in enumerate(SOURCE_ORDER)}
    return sorted(devices, key=lambda d: rank.get(d[1], len(SOURCE_ORDER)))


def surrogate_layout(family_obj: dict) -> dict:
    """{devices: [(name, source)], predictors, targets, cells: {(device, predictor, target): record}}."""
    records = family_obj.get("surrogate_evaluation") or []
    targets = list(dict.fromkeys(r["target"] for r in records))
    return {
        "devices": _devices(records),
        "predictors": list(dict.fromkeys(r["predictor"] for r in records)),
        "targets": [t for t in TARGETS if t in targets] + [t for t in targets if t not in TARGETS],
        "cells": {(r["held_out_device"], r["predictor"], r["target"]): r for r in records},
    }


class Footnotes:
    """Numbered, shortened reasons of unavailable cells, one number per distinct reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def mark(self, reason: str) -> str:
        reason = textwrap.shorten(reason or "no result recorded", REASON_CHARS, placeholder="…")
        return f"n/a [{self.reasons.setdefault(reason, len(self.reasons) + 1)}]"

    def text(self) -> str:
        return "; ".join(f"[{n}] {reason}" for reason, n in self.reasons.items())


def _device_label(name: str, source: str, unseen: list[str]) -> str:
    mark = " (unseen)" if name in unseen else ""
    return f"{name}{mark}\n{'SIMULATED' if source == SIMULATED else source}"


def _use_log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) > 1 and max(positive) / min(positive) > LOG_SCALE_RATIO


def _mape_bars(ax: Axes, layout: dict, target: str, notes: Footnotes) -> None:
    devices, predictors = layout["devices"], layout["predictors"]
    width = 0.8 / max(len(predictors), 1)
    cells = {(d, p): layout["cells"].get((d, p, target), {}) for d, _ in devices for p in predictors}
    if _use_log_scale([c["mape_pct"] for c in cells.values() if _scored(c)]):
        ax.set_yscale("log")
    for x, (device, source) in enumerate(devices):
        hatch = SIMULATED_HATCH if source == SIMULATED else None
        for i, predictor in enumerate(predictors):
            cell, at = cells[device, predictor], x + (i - (len(predictors) - 1) / 2) * width
            if not _scored(cell):
                ax.text(at, 0.03, notes.mark(cell.get("unavailable", "")), rotation=90, ha="center",
                        va="bottom", fontsize=6.5, color="#555555", transform=ax.get_xaxis_transform())
                continue
            ax.bar(at, cell["mape_pct"], width * 0.95, color=PREDICTOR_COLORS[i % len(PREDICTOR_COLORS)],
                   hatch=hatch, edgecolor="black", linewidth=0.6)
            ax.annotate(f"{cell['mape_pct']:.3g}", (at, cell["mape_pct"]), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=6)


def _source_separators(ax: Axes, devices: list[tuple[str, str]]) -> None:
    """A dashed line between source groups, the group's name above it, the simulated ones shaded."""
    starts = [x for x, (_, source) in enumerate(devices) if x == 0 or devices[x - 1][1] != source]
    for start, end in zip(starts, [*starts[1:], len(devices)]):
        source = devices[start][1]
        if start:
            ax.axvline(start - 0.5, color="#444444", linestyle="--", linewidth=0.9)
        if source == SIMULATED:
            ax.axvspan(start - 0.5, end - 0.5, color="#f0f0f0", zorder=0)
        label = "SIMULATED (roofline model)" if source == SIMULATED else source
        ax.text((start + end - 1) / 2, 0.97, label, ha="center", va="top", fontsize=7.5,
                fontweight="bold", transform=ax.get_xaxis_transform())


def _unseen_line(layout: dict, target: str, unseen: list[str]) -> str:
    """'unseen X, within 10% / Spearman: meta-surrogate, 5-shot 80% / 0.91; ...' for the panel title."""
    shown = [d for d, _ in layout["devices"] if d in unseen]
    if not shown:
        return "unseen device: " + (f"{', '.join(unseen)} not among the held-out devices" if unseen else "not named")
    parts = []
    for predictor in layout["predictors"]:
        cell = layout["cells"].get((shown[0], predictor, target), {})
        within, rho = cell.get("within_10pct"), cell.get("spearman")
        within_text = f"{100 * within:.0f}%" if _scored(cell) and is_number(within) else "n/a"
        rho_text = f"{rho:.2f}" if _scored(cell) and is_number(rho) else "n/a"
        parts.append(f"{predictor_label(predictor, short=True)} {within_text} / {rho_text}")
    return f"unseen {shown[0]}, within 10% / Spearman: " + "; ".join(parts)


def _mape_panel(ax: Axes, layout: dict, target: str, unseen: list[str], notes: Footnotes) -> None:
    _mape_bars(ax, layout, target, notes)
    _source_separators(ax, layout["devices"])
    ax.set_xticks(range(len(layout["devices"])))
    ax.set_xticklabels([_device_label(d, s, unseen) for d, s in layout["devices"]], fontsize=7)
    ax.set_xlim(-0.5, len(layout["devices"]) - 0.5)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * (4.0 if ax.get_yscale() == "log" else 1.3))  # room for the source names
    ax.set_ylabel(f"MAPE (%){', log scale' if ax.get_yscale() == 'log' else ''}")
    title = f"{TARGETS.get(target, target)} ({target}): MAPE per held-out device (lower is better)"
    set_title(ax, f"{title}\n{_unseen_line(layout, target, unseen)}", width=int(11 * ax.figure.get_figwidth()))


def _predictor_legend(ax: Axes, predictors: list[str]) -> None:
    handles = [Patch(facecolor=PREDICTOR_COLORS[i % len(PREDICTOR_COLORS)], edgecolor="black",
                     label=predictor_label(p)) for i, p in enumerate(predictors)]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch=SIMULATED_HATCH,
                         label="SIMULATED device (roofline model)"))
    # Below the last panel: inside, it would cover bars or the source names.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=len(handles), fontsize=7.5)


def draw_surrogate_accuracy(fig: Figure, family: str, family_obj: dict) -> str | None:
    """MAPE (%) per held-out device and predictor, one panel per target; simulated devices
    hatched and apart; unavailable cells empty with a footnote."""
    layout = surrogate_layout(family_obj)
    title = f"{family}: cost-surrogate accuracy, leave-one-device-out"
    if not layout["devices"]:
        no_data(fig, title, f"no data: family {family} has no surrogate evaluation\n"
                            "(only hardware-surrogate families, with a devices section, report it)")
        return None
    unseen, notes = unseen_devices(family_obj), Footnotes()
    for row, target in enumerate(layout["targets"]):
        _mape_panel(fig.add_subplot(len(layout["targets"]), 1, row + 1), layout, target, unseen, notes)
    fig.axes[-1].set_xlabel("held-out device (grouped by source)")
    _predictor_legend(fig.axes[-1], layout["predictors"])
    fig.suptitle(textwrap.fill(f"{title}: mean absolute percentage error (MAPE) of each predictor on the "
                               "held-out device's test rows", int(10 * fig.get_figwidth())), fontsize=10)
    footnotes = f"unavailable: {notes.text()}  |  " if notes.reasons else ""
    return f"{footnotes}{SIMULATOR_NOTE}"


def surrogate_accuracy_size(family_obj: dict) -> tuple[float, float]:
    layout = surrogate_layout(family_obj)
    if not layout["devices"]:
        return (6.5, 4.6)
    width = 2.5 + len(layout["devices"]) * (0.4 + 0.35 * len(layout["predictors"]))
    return (max(9.0, width), 2.4 + 3.0 * len(layout["targets"]))


# ---------------------------------------------------------------- hardware table

COST_HEADERS = {"unseen_energy_j": "energy per\nforward pass (J)", "unseen_latency_ms": "latency (ms)",
                "unseen_peak_power_w": "peak power (W)"}


def cost_source_text(family_obj: dict) -> str:
    """'SIMULATED (roofline model, not measured)', or the recorded source(s)."""
    sources = (family_obj.get("hypervolume") or {}).get("cost_source") or ["not recorded"]
    return "; ".join(energy_source_label(source) for source in sources)


def _is_simulated(family_obj: dict) -> bool:
    return SIMULATED in ((family_obj.get("hypervolume") or {}).get("cost_source") or [])


def _primary_text(family_obj: dict, group_id: str) -> str:
    stats = group_stats(family_obj, family_obj["primary_metric"], group_id)
    n = 0 if stats is None else stats["n"]
    return f"{_mean_se(stats, format_value)}\n(n={n})"


def kept_configuration(family_obj: dict, group_id: str) -> str:
    """The exports' configuration s (layers, heads, rank, bits), where the runs record it."""
    texts = []
    for run_id in family_obj["groups"][group_id]["run_ids"]:
        s = ((family_obj["runs"].get(run_id) or {}).get("device_cost") or {}).get("s")
        if s:
            texts.append(f"{s['kept_layers']:.3g} layers, {s['kept_heads']:.3g} heads,\n"
                         f"rank {s['kept_ranks']:.3g}, {s['param_bits']}-bit")
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return UNAVAILABLE
    return distinct[0] if len(distinct) == 1 else f"{distinct[0]}\n(differs across seeds)"


def _measurements_text(stats: dict | None) -> str:
    """The count alone where every seed used the same number, else mean ± s.e."""
    return _mean_se(stats, _count).removesuffix(" ± 0")


def _group_row(family_obj: dict, group_id: str) -> list[str]:
    costs = [_mean_se(group_stats(family_obj, metric, group_id), format_value) for metric in UNSEEN_COSTS]
    return [_primary_text(family_obj, group_id), *costs,
            _mean_se(group_stats(family_obj, "hypervolume_4d", group_id), lambda v: f"{v:.3f}"),
            _measurements_text(group_stats(family_obj, "on_device_measurements", group_id)),
            kept_configuration(family_obj, group_id)]


def _columns(family_obj: dict) -> list[str]:
    primary = family_obj["primary_metric"]
    arrow = " ↑" if family_obj["metric_directions"].get(primary) == MAXIMIZE else " ↓"
    device = ", ".join(unseen_devices(family_obj)) or "the unseen device"
    on = f"on {device}" + ("\nSIMULATED" if _is_simulated(family_obj) else "")
    return [f"{metric_label(primary)}{arrow}\nmean ± s.e. (n)", *(f"{COST_HEADERS[m]} ↓\n{on}" for m in UNSEEN_COSTS),
            "hypervolume_4d ↑\n(normalised, 0-1)", "on-device\nmeasurements ↓", "kept configuration\n(exported model)"]


def _row_label(family_obj: dict, group_id: str, with_budget: bool) -> str:
    prov = family_obj["groups"][group_id]
    budget = f", {budget_text(prov['budget'])}" if with_budget else ""
    return f"{prov['method']} [{prov['role']}]{budget}"


def hardware_table(family_obj: dict) -> dict:
    """{columns, rows, group_ids, cells, has_data, simulated}: cells[i][j] the text of group
    rows[i] in column j; has_data False when no run has a cost on an unseen device."""
    group_ids = list(family_obj["groups"])
    with_budget = len(budgets_in_order(family_obj)) > 1
    has_data = "hypervolume" in family_obj or any(m in family_obj["summary"] for m in UNSEEN_COSTS)
    return {"columns": _columns(family_obj), "rows": [_row_label(family_obj, g, with_budget) for g in group_ids],
            "group_ids": group_ids, "cells": [_group_row(family_obj, g) for g in group_ids],
            "has_data": has_data, "simulated": _is_simulated(family_obj)}


def reference_note(family_obj: dict) -> str:
    """The hypervolume's frame in the metrics' own units (costs un-negated)."""
    frame = family_obj.get("hypervolume")
    if not frame:
        return "hypervolume_4d: unavailable (no run has a finite cost on an unseen device)"
    natural = [(-v if axis in UNSEEN_COSTS else v) for axis, v in zip(frame["axes"], frame["reference"])]
    point = ", ".join(f"{axis} {format_value(v)}" for axis, v in zip(frame["axes"], natural))
    return (f"hypervolume_4d reference point: {point} (costs: 1.1 × the worst observed); "
            f"{frame.get('note', '')}; {frame['runs']} runs; costs on {', '.join(frame['device'])}: "
            f"{cost_source_text(family_obj)}")


def draw_hardware_table(fig: Figure, family: str, family_obj: dict) -> str | None:
    """Per group: primary metric, cost on the unseen device, hypervolume_4d, on-device
    measurements and the kept configuration."""
    drawn = draw_table_figure(
        fig, hardware_table(family_obj), f"{family}: quality and cost on the unseen device per method",
        f"mean ± s.e. over seeds; cost source: {cost_source_text(family_obj)}",
        f"no data: no run in family {family} has a cost on an unseen device\n(none of {', '.join(UNSEEN_COSTS)})")
    return reference_note(family_obj) if drawn else None


def hardware_table_size(family_obj: dict) -> tuple[float, float]:
    if not hardware_table(family_obj)["has_data"]:
        return (6.5, 4.6)
    return (14.0, 2.6 + 0.65 * (len(family_obj["groups"]) + 1))


FIGURE_SIZES = {"surrogate_accuracy": surrogate_accuracy_size, "hardware_table": hardware_table_size}

__all__ = ["FIGURE_SIZES", "draw_hardware_table", "draw_surrogate_accuracy", "hardware_table", "surrogate_layout"]
