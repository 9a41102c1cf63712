"""The README's results table, rendered from an aggregated_metrics.json.

    python -m wattpeft.report.markdown results/comparison/aggregated_metrics.json

One row per group (family, method, budget): mean +- standard error over n seeds for the
family's primary metric and the main cost metrics; unavailable values are written as such.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..utils.io import read_json

COLUMNS = {
    "classification": ["accuracy", "mcc", "macro_f1"],
    "summarisation": ["rouge1", "rouge2", "rougeL"],
    "lm": ["perplexity"],
    # A stream run: all from its accuracy matrix, then the stored adapter and CPU latency.
    "stream": ["retained_auc", "average_accuracy", "forgetting_max_pp", "forgetting_first_pp", "bwt_pp", "fwt_pp",
               "extra_memory_mb", "cpu_latency_overhead_pct"],
}
COST = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "train_time_s", "energy_j_per_sample"]
STREAM_COST = ["train_time_s", "energy_j_per_task"]


def cell(stats: dict | None, digits: int) -> str:
    if not stats or stats.get("mean") is None:
        return "unavailable"
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("se") is not None:
        text += f" ± {stats['se']:.{digits}f}"
    return text


def family_rows(family: str, obj: dict) -> list[str]:
    task = next(iter(obj["runs"].values())).get("task", "classification")
    costs = STREAM_COST if task == "stream" else COST
    metrics = COLUMNS.get(task, []) + costs
    header = ["family", "method (role)", "budget %", "achieved %", "n"] + metrics + ["energy source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group_id, group in obj["groups"].items():
        n = len(group["run_ids"])
        values = [cell(obj["summary"].get(m, {}).get(group_id), 1 if m in costs or m.endswith(("_pp", "_pct")) else 3)
                  for m in metrics]
        achieved = group.get("budget_achieved_pct")
        achieved_text = f"{achieved:.3f}" if achieved is not None else "unavailable"
        row = [family, f"{group['method']} ({group['role']})", f"{group['budget']:g}", achieved_text, str(n),
               *values, group["energy_source"]]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def results_table(aggregated: dict) -> str:
    blocks = ["\n".join(family_rows(family, obj)) for family, obj in aggregated["families"].items()]
    return "\n\n".join(blocks)


def main(path: str = "results/comparison/aggregated_metrics.json") -> None:
    print(results_table(read_json(Path(path))))


if __name__ == "__main__":
    main(*sys.argv[1:])
