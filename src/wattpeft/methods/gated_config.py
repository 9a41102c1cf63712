"""Typed configs shared by the gated LoRA methods (DiGASE, EChorda, MetaS-PEFT; seed 002).
Torch-free.

Every gated method is LoRA on the target modules (the shared `alpha`, `dropout`,
`target_modules`, `rank`; default targets q and v) with hard-concrete gates
(methods/hard_concrete.py) over layers, attention heads and LoRA ranks. The deployment
setting (`seq_len`, `param_bits`) is where the cost of a configuration is counted. Each
method's config.py picks the base that matches its cost; no method accepts a key it would
ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..devices.catalogue import PARAM_BITS
from .params import MethodConfig, param


@dataclass(frozen=True)
class GatedConfig(MethodConfig):
    # Weight of the L0 term: l0_weight x (expected open gates / gates), in [0, 1].
    l0_weight: float = param(0.01, lambda v: v >= 0, "must be >= 0")
    # The gates' learning rate (AdamW, no weight decay); the adapter keeps training.learning_rate.
    gate_lr: float = param(0.05, lambda v: v > 0, "must be > 0")
    # Hard-concrete temperature (beta; Louizos et al.: 2/3).
    temperature: float = param(2.0 / 3.0, lambda v: v > 0, "must be > 0")
    # The deployment setting the cost is counted at: tokens per sequence and weight bits.
    seq_len: int = param(128, lambda v: v >= 1, "must be >= 1")
    param_bits: int = param(16, lambda v: v in PARAM_BITS, f"must be one of {list(PARAM_BITS)}")


@dataclass(frozen=True)
class FlopsConfig(GatedConfig):
    """DiGASE: cost = lambda_flops x the expected FLOPs relative to the full model."""

    lambda_flops: float = param(1.0, lambda v: v >= 0, "must be >= 0")


@dataclass(frozen=True)
class DeviceCostConfig(GatedConfig):
    """A cost in joules on a target device (EChorda, MetaS-PEFT)."""

    # A device of the device table (EChorda) or of the surrogate (MetaS-PEFT, see there).
    target_device: str | None = param(None, lambda v: len(v) > 0, "must not be empty")
    lambda_energy: float = param(1.0, lambda v: v >= 0, "must be >= 0")
    # The energy the cost is divided by; None: the full (ungated) model's predicted energy.
    energy_budget_j: float | None = param(None, lambda v: v > 0, "must be > 0")


@dataclass(frozen=True)
class RegressionConfig(DeviceCostConfig):
    """EChorda: a ridge regression of log energy fitted on the target device's rows."""

    # Measurements of the target device the regression is fitted on (seed 002: 200).
    n_measurements: int = param(200, lambda v: v >= 2, "must be >= 2")
    # Seed of the draw of those rows from the device table.
    measurement_seed: int = param(0, lambda v: v >= 0, "must be >= 0")
    # Ridge penalty on the standardised features' weights (times the number of rows).
    ridge_alpha: float = param(1e-3, lambda v: v >= 0, "must be >= 0")


@dataclass(frozen=True)
class SurrogateCostConfig(DeviceCostConfig):
    """MetaS-PEFT: lambda E / E_budget + mu L / L_budget + nu P / P_budget from the
    meta-surrogate; a budget left None is the full model's prediction."""

    mu_latency: float = param(1.0, lambda v: v >= 0, "must be >= 0")
    nu_power: float = param(1.0, lambda v: v >= 0, "must be >= 0")
    latency_budget_ms: float | None = param(None, lambda v: v > 0, "must be > 0")
    power_budget_w: float | None = param(None, lambda v: v > 0, "must be > 0")


__all__ = ["DeviceCostConfig", "FlopsConfig", "GatedConfig", "PARAM_BITS", "RegressionConfig",
           "SurrogateCostConfig"]
