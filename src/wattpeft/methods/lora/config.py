"""LoRA's parameters: only the shared ones (alpha, dropout, target_modules, rank,
budget_tolerance_pct). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import MethodConfig


@dataclass(frozen=True)
class Config(MethodConfig):
    pass
