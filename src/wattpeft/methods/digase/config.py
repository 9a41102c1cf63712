"""digase's parameters (gated_config.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..gated_config import FlopsConfig


@dataclass(frozen=True)
class Config(FlopsConfig):
    pass
