"""LoRA through peft, at the per-module ranks of the shared budget rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..budget import Allocation
from ..peft_backed import PeftMethod, exact_targets, name_pattern, task_type
from .config import Config

if TYPE_CHECKING:
    from peft import LoraConfig


class LoraMethod(PeftMethod):
    name = "lora"
    config_class = Config

    def build_peft_config(self, allocation: Allocation) -> "LoraConfig":
        from peft import LoraConfig

        base = min(allocation.ranks.values())
        bumped = {name: r for name, r in allocation.ranks.items() if r != base}
        alpha = self.config.alpha
        return LoraConfig(
            r=base,
            rank_pattern={name_pattern(n): r for n, r in bumped.items()},
            # No alpha configured: alpha = 2 x each module's rank, a scaling of 2 everywhere.
            lora_alpha=alpha if alpha is not None else 2 * base,
            alpha_pattern={} if alpha is not None else {name_pattern(n): 2 * r for n, r in bumped.items()},
            lora_dropout=self.config.dropout,
            target_modules=exact_targets(allocation),
            task_type=task_type(self.task),
        )


Method = LoraMethod
