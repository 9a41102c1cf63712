"""metas_peft's parameters (gated_config.py). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..gated_config import SurrogateCostConfig


@dataclass(frozen=True)
class Config(SurrogateCostConfig):
    pass
