"""Hypervolume of (accuracy, -energy J, -latency ms, -peak power W), computed by moocore.

Every axis is oriented so that larger is better: accuracy as it is, each cost negated
(`maximised_points` builds the rows). moocore minimises, so `hypervolume` negates points
and reference explicitly before calling it: the volume maximised above a reference r is
the volume minimised below -r, point by point.

The default frame of a comparison (`shared_bounds`), one per device:

- reference, accuracy axis: 0 (`ACCURACY_REFERENCE`). It is the score's own floor, known
  without reading the data set, the same for every data set, device and method, so no run
  ever falls outside the box on this axis. A chance-level reference (0.5 on SST-2) would
  drop any run at or below chance from the volume instead of ranking it low, and needs
  per-data-set knowledge. The cost of this choice: a model collapsed to chance still gets
  volume from low costs; pass `accuracy_reference` (e.g. the majority-class rate) where
  that matters, and say so in the report.
- reference, each cost axis: the worst (largest) value observed across all methods of the
  comparison on that device, times `REFERENCE_MARGIN` = 1.1. Without a margin the worst
  point on each cost axis would lie on the reference plane and add no volume whatever its
  accuracy (the most energy-hungry baseline would score 0); a multiplicative margin is
  unit-free, the same for J, ms and W, and 10 % is the common convention.
- ideal: the best value observed per axis across the same comparison (highest accuracy,
  lowest energy, latency and power).

The reference and the ideal are computed once from the points of all methods together and
shared by every method (`hypervolumes`): a per-method reference would reward a method for
its own bad points. Points are normalised per axis by x' = (x - reference) / (ideal -
reference), so the reference maps to 0 and the best observed value to 1. The volume is then
unitless, in [0, 1] for the comparison's points (1 only for a single point that is best on
every axis), and joules, milliseconds and watts enter on the same footing whatever their
magnitudes. An affine rescaling of an axis multiplies every method's volume by the same
factor, so the normalisation changes neither the ranking nor the ratios of methods within
a comparison: what it buys is a number that reads the same across devices and families.
"""

from __future__ import annotations

from typing import Mapping

import moocore
import numpy as np
from numpy.typing import ArrayLike

OBJECTIVES = ("accuracy", "energy_j", "latency_ms", "peak_power_w")
ACCURACY_REFERENCE = 0.0
REFERENCE_MARGIN = 1.1


def _as_points(points: ArrayLike, dims: int | None = None) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1:
        array = array.reshape(1, -1) if array.size else array.reshape(0, dims or 0)
    if array.ndim != 2 or (dims is not None and array.shape[1] != dims):
        raise ValueError(f"points must be an (n, {dims or 'd'}) array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("points hold a non-finite value: leave unavailable runs out first")
    return array


def _as_vector(vector: ArrayLike, dims: int, name: str) -> np.ndarray:
    array = np.asarray(vector, dtype=float).reshape(-1)
    if array.shape != (dims,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be {dims} finite numbers, got {vector!r}")
    return array


def maximised_points(accuracy: ArrayLike, energy_j: ArrayLike, latency_ms: ArrayLike,
                     peak_power_w: ArrayLike) -> np.ndarray:
    """(n, 4) rows (accuracy, -energy J, -latency ms, -peak power W): every axis maximised."""
    costs = [np.asarray(c, dtype=float).reshape(-1) for c in (energy_j, latency_ms, peak_power_w)]
    return np.column_stack([np.asarray(accuracy, dtype=float).reshape(-1)] + [-c for c in costs])


def reference_point(points: ArrayLike, *, accuracy_reference: float = ACCURACY_REFERENCE,
                    margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The default reference of a comparison: `accuracy_reference` on the first axis, and on
    each other (negated cost) axis `margin` times the worst observed cost, negated.

    `points` must be all points of the comparison (every method on this device), maximised
    orientation; every cost must be > 0.
    """
    array = _as_points(points)
    if len(array) == 0:
        raise ValueError("the reference needs at least one point")
    if margin < 1.0:
        raise ValueError(f"margin must be >= 1, got {margin}")
    costs = -array[:, 1:]
    if np.any(costs <= 0):
        raise ValueError("costs must be > 0 (the cost axes hold negated energy, latency, power)")
    return np.concatenate([[float(accuracy_reference)], -margin * costs.max(axis=0)])


def ideal_point(points: ArrayLike) -> np.ndarray:
    """The best observed value per axis (maximised orientation): the point that maps to 1."""
    array = _as_points(points)
    if len(array) == 0:
        raise ValueError("the ideal point needs at least one point")
    return array.max(axis=0)


def hypervolume(points: ArrayLike, reference: ArrayLike, ideal: ArrayLike | None = None) -> float:
    """Volume dominated by `points` (maximised orientation) above `reference`.

    With `ideal`, each axis is first normalised to x' = (x - reference) / (ideal - reference)
    (the reference at 0, the ideal at 1) and the result is unitless; without it the result
    is in the product of the axes' units. Only points strictly better than the reference on
    every axis add volume (the others are left out); dominated points add nothing; the
    order of points does not matter. No point, or none inside the box: 0.0.
    """
    ref = np.asarray(reference, dtype=float).reshape(-1)
    array = _as_points(points, dims=ref.size)
    ref = _as_vector(ref, array.shape[1], "reference")
    inside = array[np.all(array > ref, axis=1)]
    if len(inside) == 0:
        return 0.0
    if ideal is not None:
        best = _as_vector(ideal, array.shape[1], "ideal")
        span = best - ref
        if np.any(span <= 0):
            raise ValueError(f"ideal {best} must be better than reference {ref} on every axis")
        inside, ref = (inside - ref) / span, np.zeros_like(ref)
    # moocore minimises: negate both the points and the reference.
    return float(moocore.hypervolume(-inside, ref=-ref))


def shared_bounds(points_by_method: Mapping[str, ArrayLike], *,
                  accuracy_reference: float = ACCURACY_REFERENCE,
                  margin: float = REFERENCE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(reference, ideal) of a comparison, from the points of all its methods together."""
    arrays = [_as_points(p) for p in points_by_method.values()]
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        raise ValueError("no method has a point")
    if len({a.shape[1] for a in arrays}) != 1:
        raise ValueError("every method's points must have the same number of axes")
    everything = np.concatenate(arrays)
    reference = reference_point(everything, accuracy_reference=accuracy_reference, margin=margin)
    return reference, ideal_point(everything)


def hypervolumes(points_by_method: Mapping[str, ArrayLike], *,
                 accuracy_reference: float = ACCURACY_REFERENCE,
                 margin: float = REFERENCE_MARGIN) -> dict[str, float]:
    """Normalised hypervolume of each method's points, all against one shared frame
    (`shared_bounds`): method -> volume in [0, 1]. A method without points gets 0.0."""
    reference, ideal = shared_bounds(points_by_method, accuracy_reference=accuracy_reference,
                                     margin=margin)
    return {name: hypervolume(_as_points(points, dims=reference.size), reference, ideal)
            for name, points in points_by_method.items()}
