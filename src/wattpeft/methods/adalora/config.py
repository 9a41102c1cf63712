"""AdaLoRA's parameters: the shared ones plus its schedule. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..params import MethodConfig, param


@dataclass(frozen=True)
class Config(MethodConfig):
    # Initial rank = ceil(init_rank_ratio x mean final rank); the paper's b(0) = 1.5 b(T).
    init_rank_ratio: float = param(1.5, lambda v: v >= 1, "must be >= 1 (AdaLoRA prunes down to the budget)")
    # Share of the steps trained before pruning starts / after it ends (rank fixed).
    tinit_ratio: float = param(0.1, lambda v: 0 <= v < 1, "must be in [0, 1)")
    tfinal_ratio: float = param(0.2, lambda v: 0 <= v < 1, "must be in [0, 1)")
    delta_t: int = param(1, lambda v: v >= 1, "must be >= 1")  # steps between reallocations
    orth_reg_weight: float = param(0.5, lambda v: v >= 0, "must be >= 0")

    renamed: ClassVar[dict[str, str]] = {
        "target_rank_ratio": "init_rank_ratio (initial rank = ratio x final rank; the final rank follows from the budget)",
    }

    def problems(self) -> list[tuple[str, str]]:
        if self.tinit_ratio + self.tfinal_ratio >= 1:
            return [("tfinal_ratio", f"tinit_ratio + tfinal_ratio must be < 1 to leave steps for pruning, "
                                     f"got {self.tinit_ratio:g} + {self.tfinal_ratio:g}")]
        return []
