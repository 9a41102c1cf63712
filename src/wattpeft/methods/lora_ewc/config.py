"""LoRA-EWC's parameters: the shared ones plus online EWC's. Torch-free. LILAC's config
subclasses `EwcConfig` too (both consolidate the same way)."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import MethodConfig, param


@dataclass(frozen=True)
class EwcConfig(MethodConfig):
    # lambda of lambda / 2 x sum F (theta - anchor)^2, F the mean per-row Fisher. To second order
    # the penalty is lambda x the rise of an old task's mean loss, the task loss being one row's
    # mean: lambda = 1 is the joint-training approximation, which protects too little in practice
    # (a diagonal, local curvature); 100 sits mid-way on the log scale EWC sweeps (1 to 1e4).
    ewc_lambda: float = param(100.0, lambda v: v >= 0, "must be >= 0")
    # Online EWC's decay of the old Fisher at each consolidation (1: every task counts alike).
    ewc_gamma: float = param(1.0, lambda v: 0 <= v <= 1, "must be in [0, 1]")
    # Training rows of the task (the first ones, one backward pass each) for its Fisher.
    fisher_samples: int = param(32, lambda v: v >= 1, "must be >= 1")


@dataclass(frozen=True)
class Config(EwcConfig):
    pass
