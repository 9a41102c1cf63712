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


# A stream run (a continual family: one adapter over a stream of tasks): everything is
# derived from its accuracy matrix (evaluation/continual.py), its stored adapter, and the
# side-by-side latency of the bare and the adapted backbone (stages/continual.py).
STREAM_METRICS = (
    "retained_auc", "average_accuracy", "bwt_pp", "forgetting_max_pp", "forgetting_first_pp", "fwt_pp",
    "extra_memory_mb", "cpu_latency_overhead_pct", "backbone_latency_ms", "adapter_latency_ms",
    "energy_j_per_task", "adapter_norm_max", "adapter_norm_final",
    "train_time_s", "trainable_params", "achieved_budget_pct",
)  # fmt: skip
STREAM = "stream"  # the task name of a stream family's runs


def metrics_of_task(task: str) -> tuple[str, ...]:
    if task == STREAM:
        return STREAM_METRICS
    return TASK_METRICS[task] + RUN_METRICS
