"""What every adapter method provides, so the trainer and the export stage treat all alike.

The life of a method in a run: `attach` adapters to a pretrained backbone, train
(the trainer adds `extra_loss` and calls `after_optimizer_step`), `save` the trained
adapter, later `load` it onto a fresh backbone and `harden` it into the model that is
exported, profiled and evaluated.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Target linear layers per architecture family (SPEC: "Common ground").
TARGET_MODULES = {
    "bert": ["query", "key", "value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
ARCH_OF_MODEL_TYPE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "llama": "llama"}


def default_target_modules(model: nn.Module) -> list[str]:
    model_type = getattr(model.config, "model_type", None)
    arch = ARCH_OF_MODEL_TYPE.get(model_type)
    if arch is None:
        raise ValueError(
            f"no default target modules for model_type {model_type!r}; "
            "set target_modules in the method's config"
        )
    return TARGET_MODULES[arch]


def target_linears(model: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """Linear layers whose last name component is one of `target_modules` (peft's matching rule)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[-1] in target_modules
    ]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class AdapterMethod(ABC):
    """Base class: one subclass per method, in its own folder under methods/."""

    name: str = ""

    def __init__(self, params: dict[str, Any], budget_pct: float, task: str, total_steps: int):
        self.params = dict(params)
        self.budget_pct = float(budget_pct)
        self.task = task
        self.total_steps = int(total_steps)
        self.stats: dict[str, Any] = {}

    @abstractmethod
    def attach(self, model: nn.Module) -> nn.Module:
        """Wrap the target layers of `model`; return the model to train."""

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """Method-specific loss terms added to the task loss (None: none)."""
        return None

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimiser step, before gradients are cleared."""

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """Method state that is not a model parameter (for exact resume)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    @abstractmethod
    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Write the trained adapter (and any method state inference needs) to `out_dir`."""

    @abstractmethod
    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        """`base_model` with the adapter saved in `adapter_dir` attached."""

    @abstractmethod
    def harden(self, model: nn.Module) -> nn.Module:
        """The inference model: adapters merged, gates fixed, quantised where the method says."""
