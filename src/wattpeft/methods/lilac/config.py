"""LILAC's parameters: the shared ones, online EWC's (as LoRA-EWC) and the dictionary's. Torch-free.
The shared `rank` is the coefficients' rank here (unset: 4); the budget rule does not apply."""

from __future__ import annotations

from dataclasses import dataclass

from ..lora_ewc.config import EwcConfig
from ..params import param

DEFAULT_RANK = 4
STORAGE_BITS = (8, 32)  # int8 with per-row scales, or float32 as trained


@dataclass(frozen=True)
class Config(EwcConfig):
    # K: atoms per dictionary (one dictionary per feature width, shared by all layers).
    atoms: int = param(64, lambda v: v >= 1, "must be >= 1")
    # How the adapter is stored: 8 (int8, one float32 scale per row) or 32 (float32).
    storage_bits: int = param(8, lambda v: v in STORAGE_BITS, "must be 8 or 32")

    @property
    def coefficient_rank(self) -> int:
        return DEFAULT_RANK if self.rank is None else self.rank
