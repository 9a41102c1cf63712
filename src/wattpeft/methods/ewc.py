"""Fisher information of adapter parameters, and the EWC penalty built on it: shared by the
continual methods (LoRA-EWC and LILAC consolidate with EWC; HIMALAYA reads the gradient-only
Fisher before it evicts an atom).

Two estimators of the diagonal Fisher F_k = E[(d log p(y|x) / d theta_k)^2]:

* `per_sample_fisher`: the mean over rows of each row's own squared gradient, one backward
  pass per row. Avalanche's EWCPlugin squares the gradient of a minibatch's mean loss
  instead (its issue 1224): for a batch of B rows that is (1/B sum_n g_n)^2, which drops the
  B - 1 cross terms' worth of variance and shrinks F by up to B times.
* `GradientFisher`: an exponential moving average of the squared training gradients, read
  after each optimiser step: no data and no extra pass ("gradient-only").

The EWC penalty is lambda / 2 * sum_k F_k (theta_k - theta*_k)^2 over the anchored
parameters, zero at the anchor. Online EWC (Schwarz et al. 2018): after each task the
Fisher is gamma * F_old + F_task and the anchor moves to the current parameters.

`EwcStream` is that consolidation as a continual method's mixin (end_task, extra_loss logged
as `loss_ewc`, resumable state, the Fisher and anchor saved beside the adapter): LoRA-EWC and
LILAC differ only in the parameters they anchor (`ewc_params`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, Iterable, Mapping

import torch
from torch import nn

Batch = dict[str, torch.Tensor]
NamedParams = Mapping[str, nn.Parameter]


def trainable_named(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def per_sample_fisher(model: nn.Module, params: NamedParams, batches: Iterable[Batch]) -> dict[str, torch.Tensor]:
    """Mean over `batches` (each ONE row) of the squared gradient of that row's loss
    (`model(**batch).loss`, the negative log-likelihood of its own target). Gradients already
    on `params` are kept and restored; the model is left in the mode it was in."""
    saved = {name: None if p.grad is None else p.grad.detach().clone() for name, p in params.items()}
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training, rows = model.training, 0
    model.eval()  # no dropout: the Fisher of the model as it predicts
    try:
        device = next(iter(params.values())).device
        for batch in batches:
            if batch["input_ids"].shape[0] != 1:
                raise ValueError(f"per_sample_fisher takes one row per batch, got {batch['input_ids'].shape[0]}")
            batch = {k: v.to(device) for k, v in batch.items()}
            grads = torch.autograd.grad(model(**batch).loss, list(params.values()), allow_unused=True)
            for (name, _), grad in zip(params.items(), grads):
                if grad is not None:
                    fisher[name] += grad.detach().float() ** 2
            rows += 1
    finally:
        model.train(was_training)
        for name, p in params.items():
            p.grad = saved[name]
    if rows == 0:
        raise ValueError("per_sample_fisher got no rows")
    return {name: value / rows for name, value in fisher.items()}


class GradientFisher:
    """EMA of squared gradients, updated from the gradients of each optimiser step."""

    def __init__(self, decay: float = 0.99):
        self.decay = float(decay)
        self.value: dict[str, torch.Tensor] = {}

    def update(self, params: NamedParams) -> None:
        for name, p in params.items():
            if p.grad is None:
                continue
            squared = p.grad.detach().float() ** 2
            old = self.value.get(name)
            self.value[name] = squared if old is None else self.decay * old + (1 - self.decay) * squared

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "value": {k: v.clone() for k, v in self.value.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.value = {k: v.clone() for k, v in state["value"].items()}


class EWC:
    """Online EWC over named parameters: `consolidate` after each task, `penalty` in training."""

    def __init__(self, strength: float, gamma: float = 1.0):
        self.strength = float(strength)  # lambda
        self.gamma = float(gamma)  # decay of the old Fisher at each consolidation (1: plain sum)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def consolidate(self, params: NamedParams, task_fisher: Mapping[str, torch.Tensor]) -> None:
        for name, p in params.items():
            new = task_fisher[name].detach().float()
            old = self.fisher.get(name)
            self.fisher[name] = new if old is None else self.gamma * old + new
            self.anchor[name] = p.detach().float().clone()

    def penalty(self, params: NamedParams) -> torch.Tensor | None:
        """lambda / 2 * sum F (theta - theta*)^2; None before the first consolidation."""
        if not self.anchor:
            return None
        total = None
        for name, anchor in self.anchor.items():
            p = params[name]
            term = (self.fisher[name].to(p.device) * (p.float() - anchor.to(p.device)) ** 2).sum()
            total = term if total is None else total + term
        return 0.5 * self.strength * total

    def state_dict(self) -> dict[str, Any]:
        return {"strength": self.strength, "gamma": self.gamma,
                "fisher": {k: v.clone() for k, v in self.fisher.items()},
                "anchor": {k: v.clone() for k, v in self.anchor.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strength, self.gamma = float(state["strength"]), float(state["gamma"])
        self.fisher = {k: v.clone() for k, v in state["fisher"].items()}
        self.anchor = {k: v.clone() for k, v in state["anchor"].items()}


class EwcStream(ABC):
    """Mixin (before ContinualMethod in the bases) for a continual method that consolidates with
    online EWC after each task: LoRA-EWC and LILAC. Its config holds `ewc_lambda`, `ewc_gamma`
    and `fisher_samples` (lora_ewc/config.py: `EwcConfig`); the method names the parameters EWC
    anchors in `ewc_params` (the adapter's, not the task head's)."""

    EWC_FILE = "ewc_state.safetensors"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ewc = EWC(self.config.ewc_lambda, self.config.ewc_gamma)
        self._ewc_loss: float | None = None

    @abstractmethod
    def ewc_params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The anchored parameters by name (the same names after `load`)."""

    def ewc_stats(self) -> dict[str, Any]:
        return {"ewc_lambda": self.ewc.strength, "ewc_gamma": self.ewc.gamma,
                "fisher_samples": self.config.fisher_samples, "fisher_estimator": "per-sample"}

    def end_task(self, model: nn.Module, task_index: int, per_sample_batches: Iterable[Batch]) -> None:
        """Per-sample Fisher from the task's first `fisher_samples` rows, then consolidate."""
        params = self.ewc_params(model)
        rows = itertools.islice(per_sample_batches, self.config.fisher_samples)
        self.ewc.consolidate(params, per_sample_fisher(model, params, rows))

    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        penalty = self.ewc.penalty(self.ewc_params(model))
        self._ewc_loss = None if penalty is None else float(penalty.detach())
        return penalty

    def loss_terms(self) -> dict[str, float]:
        # 0 before the first consolidation, so every record of a stream has the column.
        return {"loss_ewc": self._ewc_loss or 0.0}

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {**super().state_dict(model), "task": self.current_task, "ewc": self.ewc.state_dict()}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        super().load_state_dict(model, state)
        self.current_task = int(state["task"])
        self.ewc.load_state_dict(state["ewc"])

    def save_ewc(self, out_dir: Path) -> None:
        """Fisher and anchor as safetensors (part of the adapter as stored)."""
        from safetensors.torch import save_file

        tensors = {f"{kind}/{name}": t.contiguous().cpu() for kind in ("fisher", "anchor")
                   for name, t in getattr(self.ewc, kind).items()}
        meta = {"strength": str(self.ewc.strength), "gamma": str(self.ewc.gamma), "task": str(self.current_task)}
        save_file(tensors, str(Path(out_dir) / self.EWC_FILE), metadata=meta)

    def load_ewc(self, adapter_dir: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(Path(adapter_dir) / self.EWC_FILE), framework="pt") as f:
            meta = f.metadata()
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        parts = {kind: {k.split("/", 1)[1]: t for k, t in tensors.items() if k.startswith(f"{kind}/")}
                 for kind in ("fisher", "anchor")}
        self.ewc.load_state_dict({"strength": meta["strength"], "gamma": meta["gamma"], **parts})
        self.current_task = int(meta["task"])
