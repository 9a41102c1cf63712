"""Few-shot linear calibration of the surrogate on a device: psi'(s) = a * psi(s) + b per metric.

psi is the surrogate's output, the natural log of each metric, so the correction is
exp(b) * metric^a in natural units: it stays positive and weighs relative errors alike
(what MAPE measures), where a correction in natural units can turn small values negative.

(a, b) is the least-squares line through the k measured points (psi(s_i), log y_i) of
each metric, in closed form (torch, differentiable in both the predictions and the
measurements, so meta-training backpropagates through it):

    a = cov(psi, log y) / var(psi),   b = mean(log y) - a mean(psi)

Guards, per metric:
- NaN measurements (a metric the device cannot report) are left out of the fit.
- All predictions equal (var(psi) <= (1e-6 (1 + |mean psi|))^2), or a single finite
  point: no slope can be fitted, so a = 1 and b = mean(log y - psi) (the offset only).
- No finite point at all: the identity, a = 1 and b = 0 (nothing to calibrate against).
`points` records how many measurements each metric's fit used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

DEGENERATE_TOLERANCE = 1e-6


@dataclass
class Calibration:
    """Per-metric a, b (tensors of 3) and the number of measurements each fit used."""

    a: torch.Tensor
    b: torch.Tensor
    points: tuple[int, ...]

    def apply(self, log_predictions: torch.Tensor) -> torch.Tensor:
        """a * psi + b, column by column."""
        return log_predictions * self.a.to(log_predictions.dtype) + self.b.to(log_predictions.dtype)

    def as_dict(self) -> dict[str, Any]:
        return {"space": "natural log", "a": self.a.detach().tolist(), "b": self.b.detach().tolist(),
                "points": list(self.points)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> "Calibration":
        return cls(torch.tensor(data["a"]), torch.tensor(data["b"]), tuple(int(n) for n in data["points"]))


def fit_calibration(log_predictions: torch.Tensor, log_measurements: torch.Tensor) -> Calibration:
    """Least-squares (a, b) per column of (k, m) predictions and measurements (NaN: missing)."""
    weights = torch.isfinite(log_measurements).to(log_predictions.dtype)
    measured = torch.where(weights > 0, log_measurements, torch.zeros_like(log_measurements))
    count = weights.sum(dim=0)
    safe_count = count.clamp(min=1)
    mean_x = (weights * log_predictions).sum(dim=0) / safe_count
    mean_y = (weights * measured).sum(dim=0) / safe_count
    dx, dy = log_predictions - mean_x, measured - mean_y
    var_x = (weights * dx * dx).sum(dim=0) / safe_count
    cov_xy = (weights * dx * dy).sum(dim=0) / safe_count
    sloped = (var_x > (DEGENERATE_TOLERANCE * (1 + mean_x.abs())) ** 2) & (count >= 2)
    slope = torch.where(sloped, cov_xy / torch.where(sloped, var_x, torch.ones_like(var_x)), torch.ones_like(var_x))
    offset = torch.where(count > 0, mean_y - slope * mean_x, torch.zeros_like(mean_y))
    return Calibration(slope, offset, tuple(int(n) for n in count.tolist()))


__all__ = ["Calibration", "DEGENERATE_TOLERANCE", "fit_calibration"]
