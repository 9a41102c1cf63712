"""hest_fp16's parameters (spectral_config.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..spectral_config import ControllerDimConfig, DualAscentConfig


@dataclass(frozen=True)
class Config(DualAscentConfig, ControllerDimConfig):
    pass
