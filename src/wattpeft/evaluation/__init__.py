"""Evaluation: pure metric functions, a task-aware `evaluate_model`, and the names of the
metrics each task produces (`outputs`, torch-free: config validation reads it while
Snakemake parses). Names are imported lazily (PEP 562) for the same reason."""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "evaluate": ("TASKS", "evaluate_model"),
    "metrics": ("classification_metrics", "latency_percentiles", "perplexity", "rouge_scores"),
    "outputs": ("TASK_METRICS", "RUN_METRICS", "metrics_of_task"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
