"""Drawing primitives shared by the comparison figures (figures.py, spectral.py): metric and
energy-source labels, number formats, lookups in a family object, and the sentences that
replace a plot when its data is missing (an absent value is never drawn as 0)."""

from __future__ import annotations

import textwrap

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wattpeft.report.stats import is_number

UNAVAILABLE = "unavailable"

METRIC_LABELS = {
    # Continual (stream) runs: all from the accuracy matrix (evaluation/continual.py).
    "average_accuracy": "Average final score over all tasks (fraction, 0-1)",
    "retained_auc": "Retained-accuracy AUC (normalised by T - 1, 0-1)",
    "bwt_pp": "Backward transfer (pp)",
    "fwt_pp": "Forward transfer over the bare backbone (pp)",
    "forgetting_max_pp": "Forgetting (max-then-last, pp)",
    "forgetting_first_pp": "Forgetting (first-then-last, pp)",
    "extra_memory_mb": "Extra memory of the stored adapter (MB)",
    "cpu_latency_overhead_pct": "CPU latency overhead (%, host CPU, not a Raspberry Pi)",
    "backbone_latency_ms": "Bare backbone latency (ms, host CPU, not a Raspberry Pi)",
    "adapter_latency_ms": "Adapted model latency (ms, host CPU, not a Raspberry Pi)",
    "energy_j_per_task": "Energy (J per task)",
    "adapter_norm_max": "Adapter norm, largest along the stream",
    "adapter_norm_final": "Adapter norm at the end of the stream",
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
    "modelled_j_per_sample": "Modelled energy, whole forward (J per sample)",
    "modelled_adapter_j_per_sample": "Modelled energy, adapter path (J per sample)",
    "controller_params": "Controller parameters (count)",
    "adapter_flop_share_max": "Adapter share of a forward pass's FLOPs, every direction on",
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


def group_stats(family_obj: dict, metric: str, group_id: str) -> dict | None:
    return family_obj["summary"].get(metric, {}).get(group_id)


def stat_mean(stats: dict | None) -> float | None:
    return None if stats is None else stats["mean"]


def missing_energy_text(source: str, flags: list[str]) -> str:
    """Why an energy value is missing: no counter at all, or a counter whose windows were
    not valid (too short, reset, ...). A figure never says 'no counter' for the second."""
    if source == "unavailable":
        return "unavailable (no counter)"
    return f"no valid window ({', '.join(flags) or source})"


def message_axes(ax: Axes, message: str) -> None:
    """Replace a plot with an explanation: an absent value is not drawn as 0."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def set_title(ax: Axes, text: str, width: int = 72) -> None:
    """Title wrapped so it never runs past the figure edge."""
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, width) or [""]]
    ax.set_title("\n".join(lines))


def methods_in_order(family_obj: dict, group_ids: list[str] | None = None) -> list[str]:
    """Methods in configured order (the groups' order), of `group_ids` when given."""
    groups = family_obj["groups"]
    return list(dict.fromkeys(groups[g]["method"] for g in (group_ids if group_ids is not None else groups)))


def budgets_in_order(family_obj: dict, group_ids: list[str] | None = None) -> list:
    groups = family_obj["groups"]
    budgets = dict.fromkeys(groups[g]["budget"] for g in (group_ids if group_ids is not None else groups))
    return sorted(budgets, key=lambda b: (0, b, "") if is_number(b) else (1, 0, str(b)))


def group_at(family_obj: dict, method: str, budget, group_ids: list[str] | None = None) -> str | None:
    for gid in group_ids if group_ids is not None else family_obj["groups"]:
        prov = family_obj["groups"][gid]
        if prov["method"] == method and prov["budget"] == budget:
            return gid
    return None


def budget_text(budget) -> str:
    return f"budget {budget:g}%" if is_number(budget) else f"budget {budget}"


def no_data(fig: Figure, title: str, message: str) -> None:
    """The whole figure is one sentence: why there is nothing to draw (data unavailable, not 0)."""
    ax = fig.add_subplot()
    message_axes(ax, message)
    ax.axis("off")  # a sentence, not an empty plot
    set_title(ax, title)


def cell_table(fig: Figure, data: dict) -> Axes:
    """The table {rows, columns, cells} filling one bare axes, header row shaded."""
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(cellText=data["cells"], rowLabels=data["rows"], colLabels=data["columns"],
                     bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    for col in range(len(data["columns"])):
        table[0, col].set_facecolor("#eeeeee")
    return ax


def draw_table_figure(fig: Figure, data: dict, title: str, subtitle: str, missing: str) -> bool:
    """A table figure of `data` ({has_data, rows, columns, cells}) under `title` and
    `subtitle`; without data, `missing` in its place. True when the table was drawn."""
    if not data["has_data"]:
        no_data(fig, title, missing)
        return False
    ax = cell_table(fig, data)
    set_title(ax, f"{title}\n{subtitle}", width=int(11 * fig.get_figwidth()))
    return True
