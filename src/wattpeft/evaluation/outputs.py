"""Which metrics a run's metrics.json holds: per task, and for every run.

Torch-free: config validation checks a family's primary metric against these names
before any job starts, and a workflow test checks that real metrics.json files hold them.
"""

from __future__ import annotations

TASK_METRICS = {
    "classification": ("accuracy", "mcc", "macro_f1", "eval_loss"),
    "summarisation": ("rouge1", "rouge2", "rougeL", "eval_loss", "perplexity"),
    "lm": ("eval_loss", "perplexity"),
}

# Every run, whatever its task: latency (null where the sample is too small), training
# cost, the achieved budget, and energy (null where no counter exists).
RUN_METRICS = (
    "latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
    "train_time_s", "trainable_params", "achieved_budget_pct",
    "energy_j_per_sample", "energy_j_per_sample_net", "tokens_per_s",
)  # fmt: skip


def metrics_of_task(task: str) -> tuple[str, ...]:
    return TASK_METRICS[task] + RUN_METRICS
