"""Shared plumbing for methods that come from `peft` (LoRA, AdaLoRA): not rewritten here.

peft is imported where it is used, not at import time: the jobs that only load a merged
export (profile, evaluate: plain Hugging Face models) reach these classes through the
registry and would otherwise pay peft's import (about 6 s) each.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from .base import AdapterMethod, count_params
from .budget import Allocation

if TYPE_CHECKING:
    from peft import PeftConfig, TaskType

TASK_TYPES = {  # peft's TaskType member per task
    "classification": "SEQ_CLS",
    "summarisation": "CAUSAL_LM",
    "lm": "CAUSAL_LM",
    "text2text": "CAUSAL_LM",  # a stream's tasks, cast as prompt -> target for a decoder
}


class PeftMethod(AdapterMethod):
    """A peft tuner; subclasses build its config from the budget rule's allocation."""

    @abstractmethod
    def build_peft_config(self, allocation: Allocation) -> PeftConfig:
        """The peft config realising `allocation` (target_modules: `exact_targets(allocation)`)."""

    def expected_adapter_params(self, allocation: Allocation) -> int:
        """Adapter parameters peft must build for `allocation` (checked after attaching)."""
        return allocation.params

    def attach(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        names = self.target_names(model)
        allocation = self.allocate(model)
        peft_model = get_peft_model(model, self.build_peft_config(allocation))
        built = adapter_param_count(peft_model)
        expected = self.expected_adapter_params(allocation)
        if built != expected:  # peft matched other modules or ranks than the rule chose
            raise RuntimeError(f"{self.name}: peft built {built} adapter parameters, the budget rule {expected}")
        self.allocation = allocation
        self.stats = {
            **self.budget_stats(
                allocation,
                adapter_params=built,
                effective_params=allocation.params,
                trainable_params=count_params(peft_model, trainable_only=True),
            ),
            "target_modules": names,
        }
        return peft_model

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(adapter_dir))

    def harden(self, model: nn.Module) -> nn.Module:
        # safe_merge checks the merged weights for NaNs before replacing the base weights.
        return model.merge_and_unload(safe_merge=True)


def exact_targets(allocation: Allocation) -> list[str]:
    """Full module names: peft then wraps exactly the modules the rule counted."""
    return sorted(allocation.ranks)


def name_pattern(module_name: str) -> str:
    """A peft rank/alpha pattern key matching `module_name` only (peft reads keys as regexes)."""
    return re.escape(module_name)


def adapter_param_count(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def task_type(task: str) -> "TaskType":
    from peft import TaskType

    if task not in TASK_TYPES:
        raise ValueError(f"unsupported task {task!r}; expected one of {sorted(TASK_TYPES)}")
    return TaskType[TASK_TYPES[task]]
