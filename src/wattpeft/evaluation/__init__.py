"""Evaluation: pure metric functions and a task-aware `evaluate_model`."""

from .evaluate import TASKS, evaluate_model
from .metrics import classification_metrics, latency_percentiles, perplexity, rouge_scores

__all__ = [
    "TASKS",
    "classification_metrics",
    "evaluate_model",
    "latency_percentiles",
    "perplexity",
    "rouge_scores",
]
