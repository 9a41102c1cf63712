"""FW-LoRA's parameters: the shared ones plus warm-up length, lambda, EMA and estimator. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import FISHER_ESTIMATORS, MethodConfig, param


@dataclass(frozen=True)
class Config(MethodConfig):
    # K: optimiser steps of Fisher estimation before the importances freeze (seed: 500).
    # A run shorter than K uses half its steps and says so in its stats.
    fisher_warmup_steps: int = param(500, lambda v: v >= 1, "must be >= 1")
    # lambda: weight of the shrinkage term (seed: 1e-4).
    shrink_lambda: float = param(1e-4, lambda v: v >= 0, "must be >= 0")
    # F <- ema x F + (1 - ema) x ||dL/dW||^2 at each warm-up step (seed: 0.98).
    fisher_ema: float = param(0.98, lambda v: 0 <= v < 1, "must be in [0, 1)")
    # How ||dL/dW||^2 is computed (methods/fisher.py): auto, exact or probes.
    fisher_estimator: str = param("auto", lambda v: v in FISHER_ESTIMATORS, f"must be one of {', '.join(FISHER_ESTIMATORS)}")
    # Gaussian probes per batch for the probe estimate.
    fisher_probes: int = param(16, lambda v: v >= 1, "must be >= 1")
