"""Figures for continual (task-stream) families (seed 003: one adapter trained over T tasks in
order, no revisiting, no replay), from each run's `continual` section in the family's
aggregated_metrics.json (runs.<run_id>.continual: tasks, task_metrics, accuracy_matrix,
adapter_norm, task_end_steps, ...).

* `retained_accuracy`: retained accuracy a_i = mean_{j<=i} R[i][j] after each task i, one
  line per group (mean ± s.e. over seeds), x ticks the tasks in stream order; the legend
  gives each group's retained_auc (evaluation/continual.py).
* `accuracy_matrix`: one heat-map of R (mean over seeds) per group: rows "after task i",
  columns "task j" with its score's metric, every cell annotated, one colour scale (0-1)
  shared by all panels; the diagonal (each task right after its own training) outlined.
* `adapter_norm`: the adapter's norm (methods/continual.adapter_norm) against the global
  optimiser step, one line per group (mean over the seeds logged at that step), a dashed
  line where each task ended, each task's span named at the top.

A family without continual runs gets one sentence instead (drawing.no_data), as the
spectral and hardware kinds do.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wattpeft.evaluation.continual import accuracy_matrix, continual_metrics, retained_curve
from wattpeft.report.drawing import budgets_in_order, format_value, no_data, set_title
from wattpeft.report.hardware import _row_label

SERIES_COLORS = ("#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c8c8c")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")  # lines that coincide stay apart
PANELS_PER_ROW = 3
SCORE_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")  # grey: no score recorded


# ---------------------------------------------------------------- data


def stream_layout(family_obj: dict) -> dict:
    """{tasks, task_metrics, groups: {group_id: [continual sections]}, skipped: [run ids]}:
    the runs' continual sections per group, those whose stream differs from the first left
    out (named in `skipped`); no tasks when no run has a continual section."""
    sections = {run_id: (run or {}).get("continual") for run_id, run in family_obj["runs"].items()}
    first = next((s for s in sections.values() if s), None)
    layout = {"tasks": [], "task_metrics": [], "groups": {}, "skipped": []}
    if first is None:
        return layout
    layout["tasks"], layout["task_metrics"] = list(first["tasks"]), list(first.get("task_metrics") or [])
    for group_id, prov in family_obj["groups"].items():
        members = []
        for run_id in prov["run_ids"]:
            section = sections.get(run_id)
            if section and list(section["tasks"]) == layout["tasks"]:
                members.append(section)
            elif section:
                layout["skipped"].append(run_id)
        if members:
            layout["groups"][group_id] = members
    return layout


def _labels(family_obj: dict, group_ids: list[str]) -> dict[str, str]:
    with_budget = len(budgets_in_order(family_obj)) > 1
    return {gid: _row_label(family_obj, gid, with_budget) for gid in group_ids}


def _task_ticks(layout: dict) -> list[str]:
    """'rt_t2t\\n(accuracy)': each task with the metric its score is."""
    metrics = layout["task_metrics"]
    return [f"{task}\n({metrics[j]})" if j < len(metrics) else task for j, task in enumerate(layout["tasks"])]


def _mean_se(rows: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Per position: mean over the seeds with a value, its standard error (NaN below 2), n."""
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    counts = np.sum(~np.isnan(values), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(values, axis=0) if values.size else values
        std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1], np.nan)
        se = np.where(counts > 1, std / np.sqrt(np.maximum(counts, 1)), np.nan)
    return mean, se, len(rows)


def _skipped_note(layout: dict) -> str:
    skipped = layout["skipped"]
    return f"left out (another task stream): {', '.join(skipped)}  |  " if skipped else ""


def _layout_or_no_data(fig: Figure, family: str, family_obj: dict, title: str) -> dict | None:
    """The family's stream layout, or None after drawing the "no data" sentence in its place."""
    layout = stream_layout(family_obj)
    if layout["groups"]:
        return layout
    no_data(fig, title, f"no data: family {family} has no continual runs\n"
                        "(only task-stream families record an accuracy matrix)")
    return None


def _legend_outside(ax: Axes) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, title="method [role]")


# ---------------------------------------------------------------- retained accuracy


def _mean_auc(members: list[dict]) -> float | None:
    aucs = [continual_metrics(m["accuracy_matrix"])["retained_auc"] for m in members]
    aucs = [a for a in aucs if a is not None]
    return sum(aucs) / len(aucs) if aucs else None


def draw_retained_accuracy(fig: Figure, family: str, family_obj: dict) -> str | None:
    """Retained accuracy a_i after each task, one line per group, mean ± s.e. over seeds."""
    layout = _layout_or_no_data(fig, family, family_obj, f"{family}: retained accuracy along the task stream")
    if layout is None:
        return None
    ax = fig.add_subplot()
    T, labels = len(layout["tasks"]), _labels(family_obj, list(layout["groups"]))
    x = np.arange(1, T + 1)
    for k, (gid, members) in enumerate(layout["groups"].items()):
        mean, se, n = _mean_se([retained_curve(m["accuracy_matrix"]) for m in members])
        color, marker = SERIES_COLORS[k % len(SERIES_COLORS)], MARKERS[k % len(MARKERS)]
        ax.plot(x, mean, marker=marker, color=color, linewidth=1.6,
                label=f"{labels[gid]}\nAUC {format_value(_mean_auc(members))}, n={n}")
        if np.isfinite(se).any():
            ax.fill_between(x, mean - np.nan_to_num(se), mean + np.nan_to_num(se), color=color, alpha=0.15,
                            linewidth=0)
    ax.set_xticks(x)
    ax.set_xticklabels(_task_ticks(layout), rotation=30 if T > 4 else 0, ha="right" if T > 4 else "center",
                       fontsize=7.5)
    ax.set_xlim(0.7, T + 0.3)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("after training on task i (stream order; score metric in brackets)")
    ax.set_ylabel("retained accuracy a_i\n(mean score on tasks 1..i, 0-1)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    set_title(ax, f"{family}: retained accuracy along the task stream: mean ± s.e. over seeds (band), "
                  "higher is better")
    _legend_outside(ax)
    return (f"{_skipped_note(layout)}a_i = mean over j <= i of R[i][j] (score on task j after training on "
            "tasks 1..i); AUC: trapezoid area under a_1..a_T divided by T - 1 (0-1), mean over seeds")


def retained_accuracy_size(family_obj: dict) -> tuple[float, float]:
    T = len(stream_layout(family_obj)["tasks"])
    return (6.5, 4.6) if not T else (max(8.0, 4.5 + 0.9 * T), 4.8)


# ---------------------------------------------------------------- accuracy matrix


def _mean_matrix(members: list[dict]) -> tuple[np.ndarray, int]:
    stacked = np.stack([accuracy_matrix(m["accuracy_matrix"]) for m in members])
    with np.errstate(invalid="ignore"):
        return np.nanmean(stacked, axis=0) if not np.isnan(stacked).all() else stacked[0], len(members)


def _matrix_panel(ax: Axes, matrix: np.ndarray, layout: dict, label: str, n: int, first_column: bool):
    T = len(matrix)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=SCORE_CMAP, vmin=0.0, vmax=1.0, aspect="equal")
    for i in range(T):
        for j in range(T):
            value = matrix[i, j]
            text = "n/a" if not math.isfinite(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if T <= 6 else 5.5,
                    color="black" if math.isfinite(value) and value > 0.6 else "white")
        ax.add_patch(_diagonal_box(i))
    ax.set_xticks(range(T))
    ax.set_xticklabels(_task_ticks(layout), rotation=45, ha="right", fontsize=6.5)
    ax.set_yticks(range(T))
    ax.set_yticklabels([f"after {i + 1}: {task}" for i, task in enumerate(layout["tasks"])] if first_column else [],
                       fontsize=6.5)
    ax.set_xlabel("task j (score metric)", fontsize=8)
    if first_column:
        ax.set_ylabel("after training on task i", fontsize=8)
    set_title(ax, f"{label}\nmean over {n} seed{'s' if n != 1 else ''}", width=40)
    return image


def _diagonal_box(i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=1.4)


def _grid(n_panels: int) -> tuple[int, int]:
    cols = min(n_panels, PANELS_PER_ROW)
    return math.ceil(n_panels / cols), cols


def draw_accuracy_matrix(fig: Figure, family: str, family_obj: dict) -> str | None:
    """One heat-map of R (mean over seeds) per group, annotated, one shared 0-1 colour scale."""
    title = f"{family}: accuracy matrix R[i][j], score on task j after training on tasks 1..i"
    layout = _layout_or_no_data(fig, family, family_obj, title)
    if layout is None:
        return None
    labels = _labels(family_obj, list(layout["groups"]))
    rows, cols = _grid(len(layout["groups"]))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[1.0] * cols + [0.05])
    image = None
    for k, (gid, members) in enumerate(layout["groups"].items()):
        matrix, n = _mean_matrix(members)
        ax = fig.add_subplot(grid[k // cols, k % cols])
        image = _matrix_panel(ax, matrix, layout, labels[gid], n, first_column=k % cols == 0)
    bar = fig.colorbar(image, cax=fig.add_subplot(grid[:, cols]))
    bar.set_label("score (fraction, 0-1)")
    fig.suptitle(title, fontsize=10)
    metrics = ", ".join(dict.fromkeys(layout["task_metrics"])) or "not recorded"
    return (f"{_skipped_note(layout)}outlined: each task right after its own training (the diagonal); above it: "
            f"tasks not trained yet; below it: earlier tasks kept or forgotten; task metrics: {metrics}; "
            "n/a: no score recorded")


def accuracy_matrix_size(family_obj: dict) -> tuple[float, float]:
    layout = stream_layout(family_obj)
    if not layout["groups"]:
        return (6.5, 4.6)
    rows, cols = _grid(len(layout["groups"]))
    panel = max(2.8, 1.0 + 0.55 * len(layout["tasks"]))
    return (1.8 + cols * panel + 0.8, 1.6 + rows * (panel + 1.2))


# ---------------------------------------------------------------- adapter norm


def _norm_series(members: list[dict]) -> tuple[list[float], list[float]]:
    """(steps, mean norm over the seeds logged at each step), steps ascending."""
    per_step: dict[float, list[float]] = {}
    for section in members:
        for record in section.get("adapter_norm") or []:
            if record.get("norm") is not None and math.isfinite(record["norm"]):
                per_step.setdefault(record["step"], []).append(record["norm"])
    steps = sorted(per_step)
    return steps, [sum(per_step[s]) / len(per_step[s]) for s in steps]


def _task_boundaries(ax: Axes, layout: dict, end_steps: list[float]) -> None:
    """A dashed line at each task's last step; each task's span named at the top."""
    starts = [0.0, *end_steps[:-1]]
    for task, start, end in zip(layout["tasks"], starts, end_steps):
        ax.axvline(end, color="#666666", linestyle="--", linewidth=0.8)
        ax.text((start + end) / 2, 0.98, task, rotation=90 if len(layout["tasks"]) > 4 else 0, ha="center",
                va="top", fontsize=7, color="#333333", transform=ax.get_xaxis_transform())


def draw_adapter_norm(fig: Figure, family: str, family_obj: dict) -> str | None:
    """The adapter norm against the global optimiser step per group, task boundaries marked."""
    title = f"{family}: adapter norm along the task stream"
    layout = _layout_or_no_data(fig, family, family_obj, title)
    if layout is None:
        return None
    series = {gid: _norm_series(members) for gid, members in layout["groups"].items()}
    series = {gid: s for gid, s in series.items() if s[0]}
    if not series:
        no_data(fig, title, f"no data: no continual run of family {family} logged its adapter norm")
        return None
    ax = fig.add_subplot()
    labels = _labels(family_obj, list(series))
    for k, (gid, (steps, norms)) in enumerate(series.items()):
        n = len(layout["groups"][gid])
        ax.plot(steps, norms, color=SERIES_COLORS[k % len(SERIES_COLORS)], linewidth=1.4,
                linestyle=LINESTYLES[k % len(LINESTYLES)], label=f"{labels[gid]} (n={n})")
    end_steps = next((list(m.get("task_end_steps") or []) for members in layout["groups"].values()
                      for m in members if m.get("task_end_steps")), [])
    if len(end_steps) == len(layout["tasks"]):
        _task_boundaries(ax, layout, end_steps)
    low, high = ax.get_ylim()
    ax.set_ylim(min(0.0, low), high + 0.3 * (high - min(0.0, low) or 1.0))  # room for the task names
    ax.set_xlabel("global optimiser step (along the whole stream)")
    ax.set_ylabel("adapter norm\n(Frobenius norm of the weight update)")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    set_title(ax, f"{title}: mean over seeds at each logged step; dashed: end of each task")
    _legend_outside(ax)
    boundaries = "" if len(end_steps) == len(layout["tasks"]) else "task ends not recorded  |  "
    return f"{_skipped_note(layout)}{boundaries}norm of the update the adapter adds (methods/continual.adapter_norm)"


def adapter_norm_size(family_obj: dict) -> tuple[float, float]:
    return (9.0, 4.8) if stream_layout(family_obj)["groups"] else (6.5, 4.6)


FIGURE_SIZES = {"retained_accuracy": retained_accuracy_size, "accuracy_matrix": accuracy_matrix_size,
                "adapter_norm": adapter_norm_size}

__all__ = ["FIGURE_SIZES", "draw_accuracy_matrix", "draw_adapter_norm",
           "draw_retained_accuracy", "stream_layout"]
