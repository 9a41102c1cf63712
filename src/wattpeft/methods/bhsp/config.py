"""bhsp's parameters (spectral_config.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..spectral_config import FlopCapConfig


@dataclass(frozen=True)
class Config(FlopCapConfig):
    pass
