"""Typed configs shared by the spectral methods (BHSP, TABS, HEST and its ablations). Torch-free.

Each method's config.py picks the bases that match what it does; no method accepts a key
it would ignore. `rank` (from MethodConfig) is R, the number of singular directions per
target weight; left unset, the shared budget rule chooses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import MethodConfig, param


@dataclass(frozen=True)
class GateConfig(MethodConfig):
    # Gumbel-softmax temperature of the gates during training (seed: 0.67).
    gumbel_tau: float = param(0.67, lambda v: v > 0, "must be > 0")

    def problems(self) -> list[tuple[str, str]]:
        # Spectral updates are scaled by the singular values, not by a LoRA alpha.
        return [("alpha", "is a LoRA scaling; spectral methods have none")] if self.alpha is not None else []


@dataclass(frozen=True)
class FlopCapConfig(GateConfig):
    """TABS (and BHSP): a per-example FLOP cap on the adapter path, enforced by a penalty."""

    # Cap = this share of the adapter's FLOPs with every direction on, per example.
    flop_cap_ratio: float = param(0.5, lambda v: 0 < v <= 1, "must be in (0, 1]")
    # Weight of the penalty on the expected FLOPs above the cap (relative overshoot).
    cap_penalty: float = param(1.0, lambda v: v >= 0, "must be >= 0")


@dataclass(frozen=True)
class EnergyCapConfig(GateConfig):
    """HEST's energy envelope: E_max = energy_ratio x TABS's mean modelled energy per sample."""

    energy_ratio: float = param(0.6, lambda v: v > 0, "must be > 0")
    # lambda's starting value (seed: 0.1); the soft-penalty ablation keeps it fixed.
    energy_lambda: float = param(0.1, lambda v: v >= 0, "must be >= 0")


@dataclass(frozen=True)
class DualAscentConfig(EnergyCapConfig):
    # alpha: lambda <- max(0, lambda + alpha (E - E_max) / E_max) once per batch (seed: 0.05).
    dual_lr: float = param(0.05, lambda v: v > 0, "must be > 0")


@dataclass(frozen=True)
class ControllerDimConfig(MethodConfig):
    """Mixed into the configs of methods with HEST's factorised controller."""

    # k: width of the factorised controller's token and layer scores (seed: 32).
    controller_dim: int = param(32, lambda v: v >= 1, "must be >= 1")


__all__ = ["ControllerDimConfig", "DualAscentConfig", "EnergyCapConfig", "FlopCapConfig", "GateConfig"]
