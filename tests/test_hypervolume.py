"""Hypervolume of (accuracy, -energy, -latency, -peak power): hand-computed volumes, the
shared reference rule and the normalisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wattpeft.report.hypervolume import (
    hypervolume,
    hypervolumes,
    ideal_point,
    maximised_points,
    reference_point,
    shared_bounds,
)

REF_4D = np.array([0.0, -4.0, -50.0, -10.0])
A = [0.8, -2.0, -30.0, -5.0]  # box 0.8 * 2 * 20 * 5 = 160
B = [0.6, -1.0, -40.0, -4.0]  # box 0.6 * 3 * 10 * 6 = 108; A and B share 0.6 * 2 * 10 * 5 = 60


def _inclusion_exclusion(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact union of the boxes [reference, p] by inclusion-exclusion (few points only)."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.min(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(corner - reference, 0, None)))
    return total


def test_two_dimensional_boxes_by_hand():
    ref = [0.0, -5.0]
    assert hypervolume([[0.8, -2.0]], ref) == pytest.approx(0.8 * 3)
    # Two boxes 0.8 * 2 and 0.6 * 4 overlapping in 0.6 * 2.
    assert hypervolume([[0.8, -3.0], [0.6, -1.0]], ref) == pytest.approx(1.6 + 2.4 - 1.2)


def test_four_dimensional_boxes_by_hand():
    assert hypervolume([A], REF_4D) == pytest.approx(160.0)
    assert hypervolume([B], REF_4D) == pytest.approx(108.0)
    assert hypervolume([A, B], REF_4D) == pytest.approx(160.0 + 108.0 - 60.0)


def test_matches_inclusion_exclusion_on_random_sets():
    rng = np.random.default_rng(0)
    for _ in range(20):
        points = np.column_stack([rng.uniform(0.5, 1.0, 4), -rng.uniform(0.5, 4.0, (4, 3))])
        assert hypervolume(points, REF_4D) == pytest.approx(_inclusion_exclusion(points, REF_4D))


def test_a_dominated_point_adds_nothing():
    dominated = [0.5, -3.0, -45.0, -6.0]  # worse than A on every axis
    assert hypervolume([A, B, dominated], REF_4D) == pytest.approx(hypervolume([A, B], REF_4D))
    assert hypervolume([A, A], REF_4D) == pytest.approx(160.0)


def test_a_point_outside_the_reference_adds_nothing():
    too_slow = [0.95, -0.5, -60.0, -1.0]  # best everywhere but latency, beyond the reference
    on_the_plane = [0.9, -0.5, -50.0, -1.0]  # exactly at the reference latency
    assert hypervolume([A, B, too_slow, on_the_plane], REF_4D) == pytest.approx(208.0)
    assert hypervolume([too_slow], REF_4D) == 0.0
    assert hypervolume(np.zeros((0, 4)), REF_4D) == 0.0


def test_order_of_points_does_not_matter():
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(0.5, 1.0, 7), -rng.uniform(0.5, 4.0, (7, 3))])
    expected = hypervolume(points, REF_4D)
    for _ in range(5):
        assert hypervolume(points[rng.permutation(7)], REF_4D) == pytest.approx(expected, rel=1e-12)


def test_normalisation_maps_reference_to_zero_and_ideal_to_one():
    ideal = [1.0, 0.0, 0.0, 0.0]
    assert hypervolume([ideal], REF_4D, ideal) == pytest.approx(1.0)
    # A normalised: 0.8 * (2 / 4) * (20 / 50) * (5 / 10) = 160 / (1 * 4 * 50 * 10).
    assert hypervolume([A], REF_4D, ideal) == pytest.approx(0.08)
    with pytest.raises(ValueError):
        hypervolume([A], REF_4D, [1.0, -5.0, 0.0, 0.0])  # ideal worse than the reference


def test_maximised_points_negate_the_costs():
    rows = maximised_points([0.9, 0.8], [2.0, 3.0], [30.0, 20.0], [5.0, 6.0])
    assert np.array_equal(rows, [[0.9, -2.0, -30.0, -5.0], [0.8, -3.0, -20.0, -6.0]])


def test_default_reference_and_ideal():
    points = maximised_points([0.9, 0.7], [2.0, 3.0], [30.0, 20.0], [5.0, 6.0])
    assert np.allclose(reference_point(points), [0.0, -3.3, -33.0, -6.6])
    assert np.allclose(reference_point(points, accuracy_reference=0.5, margin=1.2), [0.5, -3.6, -36.0, -7.2])
    assert np.allclose(ideal_point(points), [0.9, -2.0, -20.0, -5.0])
    with pytest.raises(ValueError):
        reference_point([[0.9, 0.0, -1.0, -1.0]])  # a cost of 0 J
    with pytest.raises(ValueError):
        hypervolume([[0.9, float("nan"), -1.0, -1.0]], REF_4D)


def test_methods_share_one_reference_and_ideal():
    lora = maximised_points([0.92], [3.0], [40.0], [8.0])
    gated = maximised_points([0.90, 0.85], [1.5, 1.0], [25.0, 20.0], [6.0, 5.0])
    volumes = hypervolumes({"lora": lora, "gated": gated, "none": np.zeros((0, 4))})
    reference, ideal = shared_bounds({"lora": lora, "gated": gated})
    assert np.allclose(reference, [0.0, -3.3, -44.0, -8.8])
    assert np.allclose(ideal, [0.92, -1.0, -20.0, -5.0])
    assert volumes["lora"] == pytest.approx(hypervolume(lora, reference, ideal))
    assert volumes["gated"] == pytest.approx(hypervolume(gated, reference, ideal))
    assert volumes["none"] == 0.0
    assert volumes["lora"] > 0.0  # the margin keeps the costliest method inside the box
    assert all(0.0 <= v <= 1.0 for v in volumes.values())
    # A costlier third method moves everyone's reference: lora's volume changes too.
    slow = maximised_points([0.5], [6.0], [80.0], [12.0])
    assert hypervolumes({"lora": lora, "gated": gated, "slow": slow})["lora"] != pytest.approx(volumes["lora"])


def test_units_do_not_change_normalised_volumes():
    lora = maximised_points([0.92], [3.0], [40.0], [8.0])
    gated = maximised_points([0.90, 0.85], [1.5, 1.0], [25.0, 20.0], [6.0, 5.0])
    in_joules = hypervolumes({"lora": lora, "gated": gated})
    millijoules = np.array([1.0, 1000.0, 1.0, 1.0])
    in_millijoules = hypervolumes({"lora": lora * millijoules, "gated": gated * millijoules})
    assert in_millijoules == pytest.approx(in_joules)
