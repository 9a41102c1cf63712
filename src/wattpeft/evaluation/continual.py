"""Continual-learning metrics of one task stream, all from its accuracy matrix (torch-free).

A stream run trains one adapter on tasks 0, 1, ..., T-1 in order (no revisiting, no replay)
and scores every task after each one: R[i][j] is the score on task j after training on
tasks 0..i (a T x T matrix, scores in [0, 1]: accuracy, ROUGE-L, ... per task). Every metric
here is a function of R alone (and, for forward transfer, of the bare backbone's scores):

* average_accuracy: mean of the last row, (1/T) sum_j R[T-1][j]: the final score averaged
  over all tasks.
* retained accuracy a_i (`retained_curve`): mean_{j<=i} R[i][j], the mean score on the tasks
  seen so far, after task i.
* retained_auc: area under a_i against the task index i = 1..T (trapezoid rule over the T
  points), divided by the curve's width T - 1, so it is the curve's mean height and lies in
  [0, 1] like the scores; for T = 1 it is a_1.
* bwt_pp (backward transfer): mean over j < T-1 of R[T-1][j] - R[j][j], in percentage
  points (x100); negative when later tasks hurt earlier ones.
* forgetting_max_pp (max-then-last, Chaudhry et al., 2018): mean over j < T-1 of
  max_{i in [j, T-2]} R[i][j] - R[T-1][j], in pp: the fall from the best score a task ever
  had to its final one.
* forgetting_first_pp (first-then-last, Avalanche's definition): mean over j < T-1 of
  R[j][j] - R[T-1][j], in pp: the fall from the score right after the task's own training.
* fwt_pp (forward transfer, only when the backbone's scores `reference` are given): mean
  over j >= 1 of R[j-1][j] - reference[j], in pp: what training on tasks 0..j-1 did for task
  j before its own training.

Avalanche reports forgetting as first-then-last only, and its BWT as minus that forgetting,
so a task that rose after its own training (positive transfer from a later task) and then
fell is not counted as forgotten there up to its peak. Both definitions are reported here,
each labelled: forgetting_max_pp >= forgetting_first_pp always, and they differ exactly
when some task peaked after its own training.

A metric that is undefined is None, never 0: the backward ones (bwt_pp, forgetting_*) for
T = 1, fwt_pp for T = 1; any metric whose entries of R (or of `reference`) are missing
(None or NaN) is None as well.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

PP = 100.0  # a score difference in [0, 1] -> percentage points
BACKWARD_METRICS = ("bwt_pp", "forgetting_max_pp", "forgetting_first_pp")


def accuracy_matrix(R: Sequence[Sequence[float | None]]) -> np.ndarray:
    """R as a float T x T array (None -> NaN); refuses a matrix that is empty or not square."""
    matrix = np.array([[np.nan if v is None else v for v in row] for row in R], dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"accuracy matrix must be T x T with T >= 1, got shape {matrix.shape}")
    return matrix


def _scalar(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def retained_curve(R: Sequence[Sequence[float | None]]) -> list[float | None]:
    """a_i = mean_{j<=i} R[i][j] for i = 0..T-1 (None where a needed entry is missing)."""
    matrix = accuracy_matrix(R)
    return [_scalar(matrix[i, : i + 1].mean()) for i in range(len(matrix))]


def retained_auc(curve: Sequence[float | None]) -> float | None:
    """Trapezoid area under a_1..a_T (unit spacing) divided by its width T - 1; a_1 for T = 1."""
    values = np.array([np.nan if v is None else v for v in curve], dtype=float)
    if len(values) == 1:
        return _scalar(values[0])
    return _scalar(float(((values[1:] + values[:-1]) / 2).sum()) / (len(values) - 1))


def continual_metrics(R: Sequence[Sequence[float | None]],
                      reference: Sequence[float | None] | None = None) -> dict[str, float | None]:
    """The scalar metrics of one stream (module docstring): average_accuracy, retained_auc,
    bwt_pp, forgetting_max_pp, forgetting_first_pp, and fwt_pp when `reference` is given."""
    matrix = accuracy_matrix(R)
    T = len(matrix)
    last, earlier = matrix[T - 1], range(T - 1)
    metrics: dict[str, float | None] = {
        "average_accuracy": _scalar(last.mean()),
        "retained_auc": retained_auc(retained_curve(matrix)),
    }
    if T == 1:
        metrics.update(dict.fromkeys(BACKWARD_METRICS))
    else:
        diagonal = np.array([matrix[j, j] for j in earlier])
        peak = np.array([matrix[j : T - 1, j].max() for j in earlier])  # max over i in [j, T-2]
        final = last[: T - 1]
        metrics["bwt_pp"] = _scalar(PP * (final - diagonal).mean())
        metrics["forgetting_max_pp"] = _scalar(PP * (peak - final).mean())
        metrics["forgetting_first_pp"] = _scalar(PP * (diagonal - final).mean())
    if reference is not None:
        base = np.array([np.nan if v is None else v for v in reference], dtype=float)
        if base.shape != (T,):
            raise ValueError(f"reference scores must be one per task ({T}), got {len(base)}")
        before = np.array([matrix[j - 1, j] for j in range(1, T)])
        metrics["fwt_pp"] = _scalar(PP * (before - base[1:]).mean()) if T > 1 else None
    return metrics


__all__ = ["accuracy_matrix", "continual_metrics", "retained_auc", "retained_curve"]
