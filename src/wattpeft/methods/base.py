"""What every adapter method provides, so the trainer and the export stage treat all alike.

The life of a method in a run: `attach` adapters to a pretrained backbone, train
(the trainer adds `extra_loss` and calls `after_optimizer_step`), `save` the trained
adapter, later `load` it onto a fresh backbone and `harden` it into the model that is
exported, profiled and evaluated. Ranks come from the shared budget rule (budget.py),
parameters from the method's typed `Config` (its config.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .budget import Allocation, Target, allocate, allocation_stats
from .params import MethodConfig

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


# Task heads that peft trains whole (its modules_to_save for sequence classification):
# never adapted, so never counted. RoBERTa's head holds a `classifier.dense` that the
# target name `dense` would otherwise match.
TASK_HEADS = ("classifier", "score")


def target_linears(model: nn.Module, target_modules: list[str]) -> list[tuple[str, nn.Linear]]:
    """Linear layers named `t` or ending in `.t` for a `t` in `target_modules` (peft's rule
    for a list), outside the task head, in model order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith(f".{t}") for t in target_modules)
        and name.split(".")[0] not in TASK_HEADS
    ]


def param_count(param: nn.Parameter) -> int:
    """The weights a parameter holds: a bitsandbytes 4-bit weight packs two in a byte, and
    its quant_state keeps the shape it was quantised from (budgets count weights, not bytes)."""
    state = getattr(param, "quant_state", None)
    shape = getattr(state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(param_count(p) for p in model.parameters() if p.requires_grad or not trainable_only)


class AdapterMethod(ABC):
    """Base class: one subclass per method, in its own folder under methods/ (model.py)."""

    name: str = ""
    config_class: type[MethodConfig] = MethodConfig  # the method's config.Config
    extra_params_per_rank: int = 0  # what one rank carries besides an A row and a B column
    # False: the method's size is fixed by its own config (dictionary atoms, a router), not by
    # the shared budget rule; its stats still report the achieved budget (rank_rule "config").
    sized_by_budget: bool = True

    # What hardening does, in the export card.
    hardening_note = "merged adapter weights into the base weights (peft merge_and_unload, safe_merge)"

    def __init__(self, params: dict[str, Any], budget_pct: float, task: str, total_steps: int,
                 inputs: dict[str, Any] | None = None):
        """`inputs`: what the method's registry entry asks of other jobs (methods/__init__.py),
        read by the stage: {"energy_table": {...}, "runs": {method: its train_summary}}."""
        self.config = self.config_class.from_params(params, where=f"{self.name} method params")
        self.budget_pct = float(budget_pct)
        self.task = task
        self.total_steps = int(total_steps)
        self.inputs = dict(inputs or {})
        self.stats: dict[str, Any] = {}

    def target_names(self, model: nn.Module) -> list[str]:
        """The configured target_modules, else the architecture's defaults."""
        return list(self.config.target_modules or default_target_modules(model))

    def allocate(self, model: nn.Module) -> Allocation:
        """Per-module ranks meeting this run's budget on `model` (the shared rule, budget.py);
        call it before attaching, so that the backbone count has no adapter in it."""
        names = self.target_names(model)
        layers = target_linears(model, names)
        if not layers:
            raise ValueError(f"{self.name}: no linear layer matches target_modules {names}")
        return allocate(
            [Target(name, m.in_features, m.out_features) for name, m in layers],
            count_params(model),
            self.budget_pct,
            extra_per_rank=self.extra_params_per_rank,
            tolerance_pct=self.config.budget_tolerance_pct,
            fixed_rank=self.config.rank,
        )

    def budget_stats(self, allocation: Allocation, *, adapter_params: int, effective_params: int,
                     trainable_params: int, controller_params: int = 0) -> dict[str, Any]:
        """The stats every method reports (see docs/methods.md). `effective_params` are the
        adapter parameters that carry an update (all of them unless the method prunes);
        `controller_params` those that decide gates (0 for ungated methods)."""
        return {
            "controller_params": controller_params,
            **allocation_stats(allocation),
            "budget_tolerance_pct": self.config.budget_tolerance_pct,
            "adapter_params": adapter_params,
            "effective_adapter_params": effective_params,
            "trainable_params": trainable_params,
            "achieved_budget_pct": 100.0 * effective_params / allocation.backbone_params,
        }

    @abstractmethod
    def attach(self, model: nn.Module) -> nn.Module:
        """Wrap the target layers of `model`; return the model to train. Sets `self.stats`."""

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """Method-specific loss terms added to the task loss (None: none)."""
        return None

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimiser step (1-based), before gradients are cleared."""

    def log_fields(self) -> dict[str, float]:
        """Method-specific values for the training log's records (e.g. a Lagrange multiplier)."""
        return {}

    def loss_terms(self) -> dict[str, float]:
        """The named parts of the last `extra_loss` (e.g. loss_l0, loss_energy), each written to
        the training log's records under its own name, beside the trainer's `loss` and
        `loss_task`. Names start with `loss_`; `loss` and `loss_task` are the trainer's."""
        return {}

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: dicts with "params" and optionally "lr" and
        "weight_decay" (left out: the training config's). Every trainable parameter must be in
        exactly one group. Default: one group of all of them at the training config's values."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def validation_record(self, model: nn.Module) -> dict[str, float]:
        """Method-specific values measured during the validation pass that just ran."""
        return {}

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

    # ---------------------------------------------------------------- the export
    # An export names its method (export.json); loading goes through the registry
    # (methods.load_export), so a hardened model that is not a plain Hugging Face model
    # is reloaded, profiled and evaluated like the others.

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        """Write the hardened model into `out_dir`; returns what the export card adds."""
        hardened.save_pretrained(str(out_dir))
        return {}

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        """The hardened model `export` wrote (default: a plain Hugging Face model)."""
        from ..models import load_backbone

        return load_backbone(export_dir, task, label_names)

    @classmethod
    def reset_inference_stats(cls, model: nn.Module) -> None:
        """Start counting what `inference_stats` reports (nothing for merged adapters)."""

    @classmethod
    def inference_stats(cls, model: nn.Module) -> dict[str, Any]:
        """What the hardened adapter did in the forward passes since the last reset: for gated
        methods, modelled adapter energy and FLOPs per sample and gate use per layer. A merged
        adapter adds nothing at inference: {}."""
        return {}
