"""hest_soft's parameters (spectral_config.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..spectral_config import ControllerDimConfig, EnergyCapConfig


@dataclass(frozen=True)
class Config(EnergyCapConfig, ControllerDimConfig):
    pass
