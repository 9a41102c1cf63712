"""Shared plumbing for methods that come from `peft` (LoRA, AdaLoRA): not rewritten here."""

from __future__ import annotations

from pathlib import Path

from abc import abstractmethod

from peft import PeftConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from .base import AdapterMethod, count_params, default_target_modules, target_linears

TASK_TYPES = {
    "classification": TaskType.SEQ_CLS,
    "summarisation": TaskType.CAUSAL_LM,
    "lm": TaskType.CAUSAL_LM,
}


class PeftMethod(AdapterMethod):
    """A peft tuner; subclasses build its config from a rank chosen to meet the budget."""

    @abstractmethod
    def build_peft_config(self, rank: int, target_modules: list[str]) -> PeftConfig:
        """The peft config of this tuner at `rank` on `target_modules`."""

    def params_per_rank(self, in_features: int, out_features: int) -> int:
        """Trainable parameters one rank adds to one target layer."""
        return in_features + out_features

    def rank_for_budget(self, model: nn.Module, target_modules: list[str]) -> int:
        """Rank so that adapter parameters are about `budget_pct`% of the backbone's."""
        layers = target_linears(model, target_modules)
        if not layers:
            raise ValueError(f"no linear layer matches target_modules {target_modules}")
        per_rank = sum(self.params_per_rank(m.in_features, m.out_features) for _, m in layers)
        budget = self.budget_pct / 100.0 * count_params(model)
        return max(1, int(round(budget / per_rank)))

    def attach(self, model: nn.Module) -> nn.Module:
        targets = self.params.get("target_modules") or default_target_modules(model)
        backbone_params = count_params(model)
        rank = int(self.params.get("rank") or self.rank_for_budget(model, targets))
        peft_model = get_peft_model(model, self.build_peft_config(rank, targets))
        adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
        self.stats = {
            "rank": rank,
            "target_modules": list(targets),
            "backbone_params": backbone_params,
            "adapter_params": adapter,
            "trainable_params": count_params(peft_model, trainable_only=True),
            "budget_pct": self.budget_pct,
            "achieved_budget_pct": 100.0 * adapter / backbone_params,
        }
        return peft_model

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        return PeftModel.from_pretrained(base_model, str(adapter_dir))

    def harden(self, model: nn.Module) -> nn.Module:
        # safe_merge checks the merged weights for NaNs before replacing the base weights.
        return model.merge_and_unload(safe_merge=True)


def task_type(task: str) -> TaskType:
    if task not in TASK_TYPES:
        raise ValueError(f"unsupported task {task!r}; expected one of {sorted(TASK_TYPES)}")
    return TASK_TYPES[task]
