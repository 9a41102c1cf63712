"""Seed statistics: mean, sample std, standard error and Welch's t-test.

AI-Scientist's templates report std / n as the standard error; here it is
std / sqrt(n) with the sample standard deviation (ddof=1). Unavailable values
(None) are left out of every statistic and counted, never treated as 0.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from scipy import stats as scipy_stats

SINGLE_SEED_NOTE = "n = 1: no spread estimate (std and se need at least 2 seeds)"
NO_VALUE_NOTE = "unavailable in every run of this group"


def is_number(value: Any) -> bool:
    """True for a finite int/float (bool excluded: a flag is not a measurement)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def seed_stats(values: Sequence[float | None], seeds: Sequence[Any]) -> dict:
    """Mean, std (ddof=1), se = std / sqrt(n) and n over the available values.

    `values[i]` belongs to `seeds[i]`; None marks an unavailable value.
    """
    kept = [(seed, float(v)) for seed, v in zip(seeds, values) if is_number(v)]
    missing = [seed for seed, v in zip(seeds, values) if not is_number(v)]
    n = len(kept)
    result: dict[str, Any] = {
        "mean": None,
        "std": None,
        "se": None,
        "n": n,
        "seeds": [seed for seed, _ in kept],
        "n_unavailable": len(missing),
        "seeds_unavailable": missing,
        "note": None,
    }
    if n == 0:
        result["note"] = NO_VALUE_NOTE
        return result
    # statistics works in exact fractions: identical seeds give std exactly 0, not 1e-18.
    numbers = [v for _, v in kept]
    result["mean"] = statistics.mean(numbers)
    if n == 1:
        result["note"] = SINGLE_SEED_NOTE
        return result
    std = statistics.stdev(numbers)  # sample std, ddof = 1
    result["std"] = std
    result["se"] = std / math.sqrt(n)
    return result


def welch_test(proposed: Sequence[float], baseline: Sequence[float]) -> dict:
    """Two-sided Welch's t-test of proposed vs baseline (positive t: proposed mean larger)."""
    prop = [float(v) for v in proposed if is_number(v)]
    base = [float(v) for v in baseline if is_number(v)]
    result: dict[str, Any] = {
        "test": None,
        "statistic": None,
        "p_value": None,
        "n_proposed": len(prop),
        "n_baseline": len(base),
        "reason": None,
    }
    if len(prop) < 2 or len(base) < 2:
        result["reason"] = "n < 2"
        return result
    if statistics.pvariance(prop) == 0 and statistics.pvariance(base) == 0:
        # t is undefined (0/0 or x/0): say so instead of reporting nan or inf.
        result["reason"] = "zero variance in both groups"
        return result
    outcome = scipy_stats.ttest_ind(prop, base, equal_var=False)
    result.update(
        test="welch_t",
        alternative="two-sided",
        statistic=float(outcome.statistic),
        p_value=float(outcome.pvalue),
    )
    return result
