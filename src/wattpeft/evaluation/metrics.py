"""Pure metric functions: plain Python/NumPy in, plain floats out.

Every function checks its inputs and raises ValueError naming the problem, so a
silently empty or misaligned evaluation can never turn into a plausible number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from ..utils.latency import latency_percentiles  # noqa: F401  (re-exported: one definition)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check_paired(first: Sequence, second: Sequence, first_name: str, second_name: str) -> None:
    if len(first) == 0:
        raise ValueError(f"{first_name} is empty: nothing to score")
    if len(first) != len(second):
        raise ValueError(
            f"{first_name} has {len(first)} items but {second_name} has {len(second)}: they must pair up"
        )


def _check_label_range(values: Sequence[int], n_labels: int, name: str) -> None:
    out_of_range = sorted({int(v) for v in values if not 0 <= int(v) < n_labels})
    if out_of_range:
        raise ValueError(f"{name} holds label ids {out_of_range} outside 0..{n_labels - 1}")


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], label_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy, Matthews correlation and macro-F1 of integer label ids.

    `label_names` (index = label id) only bounds the valid ids; macro-F1 averages
    over the classes that occur in `y_true` or `y_pred` (scikit-learn's default),
    so a class absent from a small evaluation split does not count as F1 = 0.
    MCC is 0.0 when it is undefined (e.g. a constant prediction).
    """
    _check_paired(y_true, y_pred, "y_true", "y_pred")
    y_true = [int(v) for v in y_true]
    y_pred = [int(v) for v in y_pred]
    if label_names is not None:
        if len(label_names) == 0:
            raise ValueError("label_names is empty")
        _check_label_range(y_true, len(label_names), "y_true")
        _check_label_range(y_pred, len(label_names), "y_pred")
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (Porter stemming, no downloads needed), each in [0, 1]."""
    _check_paired(predictions, references, "predictions", "references")
    for name, texts in (("predictions", predictions), ("references", references)):
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"{name} must all be strings")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        # RougeScorer.score takes (target, prediction); F-measure is symmetric but keep the order right.
        scores = scorer.score(reference, prediction)
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: total / len(predictions) for rouge_type, total in totals.items()}


def perplexity(mean_nll: float) -> float:
    """exp(mean token negative log-likelihood, in nats); inf when it overflows a float."""
    mean_nll = float(mean_nll)
    if math.isnan(mean_nll):
        raise ValueError("mean_nll is NaN: the loss diverged")
    if mean_nll < 0:
        raise ValueError(f"mean_nll must be >= 0 (a negative log-likelihood), got {mean_nll}")
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf
