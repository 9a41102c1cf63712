"""Comparison figures (one registry entry per kind) and per-run learning curves.

Each kind writes {out_stem}.pdf and {out_stem}.png, both renamed into place
only once complete, so a Snakemake rule can target a single figure. Figures
are drawn on bare `Figure` objects with the Agg canvas (no pyplot state, no
display needed) and saved without timestamps, so a rerun gives the same bytes.
Unavailable values are drawn as the word "unavailable", never as a zero bar,
and every figure names its energy source in a footer: 'estimated' and
'simulated' energy is never passed off as measured.
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
from matplotlib.patches import Patch

from wattpeft.report.aggregate import MAXIMIZE, MEASURED_ENERGY_SOURCES
from wattpeft.report.kinds import FIGURE_KINDS
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
UNAVAILABLE = "unavailable"

METRIC_LABELS = {
    "accuracy": "Accuracy (fraction, 0-1)",
    "mcc": "Matthews correlation (-1 to 1)",
    "macro_f1": "Macro F1 (fraction, 0-1)",
    "rouge1": "ROUGE-1 F1 (fraction, 0-1)",
    "rouge2": "ROUGE-2 F1 (fraction, 0-1)",
    "rougeL": "ROUGE-L F1 (fraction, 0-1)",
    "rougeLsum": "ROUGE-Lsum F1 (fraction, 0-1)",
    "latency_p50_ms": "Latency p50 (ms, batch 1)",
    "latency_p99_ms": "Latency p99 (ms, batch 1)",
    "energy_j_per_sample": "Energy (J per sample)",
    "energy_j_per_sample_net": "Energy above idle (J per sample)",
    "train_time_s": "Training time (s)",
    "trainable_params": "Trainable parameters (count)",
    "achieved_budget_pct": "Achieved adapter budget (% of backbone)",
    "eval_loss": "Evaluation loss (cross-entropy, nats)",
    "hypervolume": "Hypervolume (unitless)",
    "perplexity": "Perplexity",
}
ENERGY_SOURCE_LABELS = {
    "nvml_counter": "measured (NVML energy counter)",
    "nvml_power": "measured (NVML power sampling)",
    "rapl": "measured (RAPL counter)",
    "estimated": "ESTIMATED (TDP-based, not measured)",
    "simulated": "SIMULATED (roofline model, not measured)",
    "unavailable": "unavailable (no counter)",
}


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


def energy_source_label(source: str) -> str:
    """Readable label for one source or a 'mixed: a, b' combination."""
    if source.startswith("mixed: "):
        parts = source.removeprefix("mixed: ").split(", ")
        return "mixed: " + "; ".join(ENERGY_SOURCE_LABELS.get(p, p) for p in parts)
    return ENERGY_SOURCE_LABELS.get(source, source)


def format_value(value: float | None) -> str:
    if value is None:
        return UNAVAILABLE
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{value:.3f}"
    return f"{value:.2g}"


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
    budget_text = f"{budget:g}%" if isinstance(budget, (int, float)) else None
    if budget_text and isinstance(achieved, (int, float)):
        budget_text += f" (got {achieved:.3g}%)"  # the nominal budget beside the achieved one
    parts = [prov["method"], budget_text, f"[{prov['role']}]"]
    return ("\n" if multiline else " ").join(p for p in parts if p)


def _stats(family_obj: dict, metric: str, group_id: str) -> dict | None:
    return family_obj["summary"].get(metric, {}).get(group_id)


def _mean(stats: dict | None) -> float | None:
    return None if stats is None else stats["mean"]


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


def missing_energy_text(source: str, flags: list[str]) -> str:
    """Why an energy value is missing: no counter at all, or a counter whose windows were
    not valid (too short, reset, ...). A figure never says 'no counter' for the second."""
    if source == "unavailable":
        return "unavailable (no counter)"
    return f"no valid window ({', '.join(flags) or source})"


# ---------------------------------------------------------------- drawing helpers


def _bar_with_annotation(ax: Axes, x: float, stats: dict | None, width: float, color: str,
                         hatch: str | None = None, metric: str = "") -> None:
    """One bar with a +-se error bar and 'mean +- se / n' above it, or the word 'unavailable'."""
    mean = _mean(stats)
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


def _message_axes(ax: Axes, message: str) -> None:
    """Replace a plot with an explanation: an absent value is not drawn as 0."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


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


def _set_title(ax: Axes, text: str, width: int = 72) -> None:
    """Title wrapped so it never runs past the figure edge."""
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    ax.set_title("\n".join(lines))


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
        _bar_with_annotation(ax, x, _stats(family_obj, metric, gid), 0.6, color, metric=metric)
    _group_axis(ax, family_obj, group_ids)
    _headroom(ax)
    ax.set_ylabel(metric_label(metric))
    gap = family_obj["gap"]
    gap_text = f"gap {gap:+.2f}% (positive = proposed better)" if gap is not None else f"gap: n/a ({family_obj['gap_note']})"
    _set_title(ax, f"{family}: {metric}{_direction_note(family_obj, metric)}, mean ± se over seeds\n{gap_text}")
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
    _set_title(ax, f"{family}: {metric} per seed{_direction_note(family_obj, metric)}\n(points: one run each, labelled by seed; box: quartiles where n >= 3)")
    _role_legend(ax, family_obj)


def _grouped_bars(fig: Figure, family_obj: dict, metrics: list[str], hatches: tuple) -> Axes:
    """Side-by-side bars of several metrics per group (one series per metric)."""
    ax = fig.add_subplot()
    group_ids = _group_ids(family_obj)
    width = 0.8 / max(len(metrics), 1)
    for i, metric in enumerate(metrics):
        for x, gid in enumerate(group_ids):
            offset = (i - (len(metrics) - 1) / 2) * width
            _bar_with_annotation(ax, x + offset, _stats(family_obj, metric, gid), width * 0.95,
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
    if not any(_mean(_stats(family_obj, m, gid)) is not None for m in metrics for gid in family_obj["groups"]):
        _message_axes(fig.add_subplot(), f"{family}: latency unavailable\n(no latency_p50_ms / latency_p99_ms values)")
        return
    ax = _grouped_bars(fig, family_obj, metrics, (None, "//"))
    ax.set_ylabel("latency per sample (ms, batch 1)")
    _set_title(ax, f"{family}: batch-1 inference latency, p50 and p99\n(lower is better), mean ± se over seeds")


def draw_energy(fig: Figure, family: str, family_obj: dict) -> None:
    """Energy per test sample; the words 'unavailable (no counter)' instead of bars when null."""
    metrics = _energy_metrics(family_obj)
    sources = "; ".join(ENERGY_SOURCE_LABELS.get(s, s) for s in family_obj["energy_sources"])
    if not any(_mean(_stats(family_obj, m, gid)) is not None for m in metrics for gid in family_obj["groups"]):
        reasons = "\n".join(_energy_reasons(family_obj)) or "no energy metric recorded"
        sources = family_obj["energy_sources"]
        headline = missing_energy_text(sources[0] if len(sources) == 1 else "mixed", family_obj.get("energy_flags", []))
        _message_axes(fig.add_subplot(), f"energy: {headline}\n\n{reasons}")
        fig.axes[0].set_title(f"{family}: energy per test sample")
        return
    ax = _grouped_bars(fig, family_obj, metrics, (None, "//", "xx"))
    ax.set_ylabel("energy (J per test sample)")
    _set_title(ax, f"{family}: energy per test sample (lower is better), mean ± se\nsource: {sources}")


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
    stats = _stats(family_obj, metric, group_id)
    if stats is None or stats["mean"] is None:
        return _missing_text(stats, metric)
    spread = f" ± {format_value(stats['se'])}" if stats["se"] is not None else ""
    text = f"{format_value(stats['mean'])}{spread} ({stats['n']})"
    if _is_unmeasured_energy(metric, stats["energy_source"]):
        text += f" [{stats['energy_source']}]"
    return text


def _best_column(family_obj: dict, metric: str, group_ids: list[str]) -> int | None:
    direction = family_obj["metric_directions"].get(metric)
    means = [(i, _mean(_stats(family_obj, metric, g))) for i, g in enumerate(group_ids)]
    means = [(i, m) for i, m in means if m is not None]
    if direction is None or len(means) < 2:
        return None
    sign = 1.0 if direction == MAXIMIZE else -1.0
    ranked = sorted(means, key=lambda item: -sign * item[1])
    # Bold only a strict winner: bolding one of several equal means would mislead.
    return ranked[0][0] if ranked[0][1] != ranked[1][1] else None


FigureKind = Callable[[Figure, str, dict], None]
FIGURES: dict[str, FigureKind] = {kind: globals()[f"draw_{kind}"] for kind in FIGURE_KINDS}


# ---------------------------------------------------------------- saving


def _figure_size(kind: str, family_obj: dict) -> tuple[float, float]:
    n_groups = len(family_obj["groups"])
    if kind == "metric_table":
        return (max(7.0, 2.0 + 2.2 * n_groups), 1.0 + 0.25 * (len(family_obj["summary"]) + 3))
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
        FIGURES[kind](fig, family, family_obj)
        fig.text(0.01, 0.01, _footer_text(family_obj), fontsize=6.5, color="#444444", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.035, 1, 1))
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
            _message_axes(ax, "no training or evaluation records logged\n(run shorter than log_every?)")
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
