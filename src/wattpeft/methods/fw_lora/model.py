"""FW-LoRA: peft's LoRA plus the Fisher-weighted shrinkage term (see __init__.py)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fisher import GradNormHooks, frozen_linears
from ..lora.model import LoraMethod
from .config import Config

ADAPTER = "default"  # peft's adapter name
IMPORTANCE_FILE = "fw_lora_importance.json"


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA layers of `model`, keyed by their name in the wrapped backbone
    (e.g. `bert.encoder.layer.3.attention.self.query`)."""
    backbone = model.base_model.model
    return {name: module for name, module in backbone.named_modules()
            if isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and ADAPTER in module.lora_A}


def update_sq_norm(module: nn.Module) -> torch.Tensor:
    """||scaling * B A||_F^2 = scaling^2 * sum((A A^T) * (B^T B)): r x r Gram matrices only."""
    a = module.lora_A[ADAPTER].weight  # r x in
    b = module.lora_B[ADAPTER].weight  # out x r
    return module.scaling[ADAPTER] ** 2 * ((a @ a.T) * (b.T @ b)).sum()


class FwLoraMethod(LoraMethod):
    name = "fw_lora"
    config_class = Config

    def attach(self, model: nn.Module) -> nn.Module:
        model = super().attach(model)
        self.modules = lora_modules(model)
        self.warmup_steps = self._warmup_steps()
        self.fisher = {name: 0.0 for name in self.modules}
        self.importance: dict[str, float] | None = None
        self.hooks = GradNormHooks(
            frozen_linears(self.modules.items()),
            self.config.fisher_estimator, self.config.fisher_probes,
        )
        self.stats.update(
            fisher_warmup_steps=self.warmup_steps,
            fisher_warmup_clamped=self.warmup_steps != self.config.fisher_warmup_steps,
            fisher_estimator=self.config.fisher_estimator,
            shrink_lambda=self.config.shrink_lambda,
        )
        return model

    def _warmup_steps(self) -> int:
        k = self.config.fisher_warmup_steps
        if k < self.total_steps:
            return k
        # A run too short for K (trial mode, tiny tests): half its steps, said in the stats.
        clamped = max(1, self.total_steps // 2)
        print(f"[wattpeft] fw_lora: fisher_warmup_steps {k} >= the run's {self.total_steps} optimiser "
              f"steps; using {clamped}", file=sys.stderr)
        return clamped

    # ---------------------------------------------------------------- training

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        if self.importance is None or self.config.shrink_lambda == 0:
            return None  # warm-up: plain LoRA (the hooks only watch)
        penalty = sum((1.0 - self.importance[name]) * update_sq_norm(module)
                      for name, module in self.modules.items())
        return self.config.shrink_lambda * penalty

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        if self.importance is not None:
            return
        ema = self.config.fisher_ema
        for name, value in self.hooks.take().items():
            # From 0 without bias correction: the factor (1 - ema^t) cancels in I = F / sum F.
            self.fisher[name] = ema * self.fisher[name] + (1.0 - ema) * value
        if step >= self.warmup_steps:
            self._freeze_importance()

    def _freeze_importance(self) -> None:
        self.hooks.remove()
        total = sum(self.fisher.values())
        if total > 0:
            self.importance = {name: f / total for name, f in self.fisher.items()}
        else:  # no gradient reached any target: nothing to weight by
            self.importance = {name: 1.0 / len(self.fisher) for name in self.fisher}
        self.stats.update(importance=dict(self.importance), fisher=dict(self.fisher),
                          fisher_forms=dict(self.hooks.forms), importance_uniform=total <= 0)

    # ---------------------------------------------------------------- resume

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {
            "fisher": dict(self.fisher),
            "importance": None if self.importance is None else dict(self.importance),
            "pending": dict(self.hooks.pending),
            "forms": dict(self.hooks.forms),
            "generator": self.hooks.generator.get_state(),
            "stats": copy.deepcopy(self.stats),
        }

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.fisher = dict(state["fisher"])
        self.hooks.pending = dict(state["pending"])
        self.hooks.forms = dict(state["forms"])
        self.hooks.generator.set_state(state["generator"])
        self.importance = None if state["importance"] is None else dict(state["importance"])
        if self.importance is not None:
            self.hooks.remove()
        self.stats.update(copy.deepcopy(state["stats"]))

    # ---------------------------------------------------------------- export

    def save(self, model: nn.Module, out_dir: Path) -> None:
        super().save(model, out_dir)
        # The update norms are not repeated here: harden records ||dW_m|| for every method.
        record = {"importance": self.importance, "fisher": self.fisher, "warmup_steps": self.warmup_steps,
                  "shrink_lambda": self.config.shrink_lambda}
        (Path(out_dir) / IMPORTANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))


Method = FwLoraMethod

__all__ = ["FwLoraMethod", "Method", "lora_modules", "update_sq_norm"]
