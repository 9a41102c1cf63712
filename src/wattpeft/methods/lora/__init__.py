"""LoRA from peft: low-rank updates B A on the target linear layers; hardened by merging."""

from __future__ import annotations

from peft import LoraConfig

from ..peft_backed import PeftMethod, task_type


class LoraMethod(PeftMethod):
    name = "lora"

    def build_peft_config(self, rank: int, target_modules: list[str]) -> LoraConfig:
        return LoraConfig(
            r=rank,
            lora_alpha=float(self.params.get("alpha", 2 * rank)),
            lora_dropout=float(self.params.get("dropout", 0.0)),
            target_modules=target_modules,
            task_type=task_type(self.task),
        )


Method = LoraMethod
