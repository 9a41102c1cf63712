"""What a method adds to be trained over a task stream (stages/continual.py).

A stream run trains one adapter on tasks 0, 1, ..., T-1 in order, never going back and
replaying nothing. The stream stage calls, for each task i:

    method.begin_task(model, i)       # before its first step (a router's task embedding)
    Trainer(...).train()              # extra_loss, after_optimizer_step as for any run
    method.end_task(model, i, rows)   # consolidation from task i's own training rows
    method.save(model, snapshot_i)    # the adapter as stored, evaluated on every task

then, to fill the accuracy matrix, a fresh backbone with each snapshot:
`harden(load(backbone, snapshot_i))`, and `set_task(hardened, j)` before scoring task j.
`adapter_norm(model)` is logged after every logged step and at each task's end.

`state_dict`/`load_state_dict` (AdapterMethod) must hold everything that is not a
parameter (Fisher, anchors, usage counts, buffers, the current task): a stream resumes
from the last finished task's state, or from a checkpoint inside a task.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Iterable

import torch
from torch import nn

from .base import AdapterMethod

Batch = dict[str, torch.Tensor]


class ContinualMethod(AdapterMethod):
    """Base of the continual-adapter methods (LoRA-EWC, LILAC, HIMALAYA)."""

    # Inputs a stream method receives beside the AdapterMethod ones: inputs["stream"] =
    # {"tasks": [task names in stream order]} (the stream stage sets it; tests may omit it).
    hardening_note = "adapter kept apart from the (possibly 4-bit) backbone, stored as the method says"

    def __init__(self, params: dict[str, Any], budget_pct: float, task: str, total_steps: int,
                 inputs: dict[str, Any] | None = None):
        super().__init__(params, budget_pct, task, total_steps, inputs)
        self.task_names: list[str] = list(self.inputs.get("stream", {}).get("tasks", ["task0"]))
        self.current_task = 0

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    def begin_task(self, model: nn.Module, task_index: int) -> None:
        """Training on task `task_index` (0-based) starts."""
        self.current_task = task_index

    def end_task(self, model: nn.Module, task_index: int, per_sample_batches: Iterable[Batch]) -> None:
        """Training on task `task_index` ended: consolidate. `per_sample_batches` yields that
        task's own training rows one at a time (batches of one row: per-sample Fisher)."""

    def set_task(self, model: nn.Module, task_index: int) -> None:
        """Inference on task `task_index` follows (task identity is known at test time)."""
        self.current_task = task_index

    @abstractmethod
    def adapter_norm(self, model: nn.Module) -> float:
        """Frobenius norm of the weight update the adapter adds, summed over adapted modules
        in quadrature (for a per-token update: its bound, or its mean over the last batch)."""

    def continual_fields(self, model: nn.Module) -> dict[str, float]:
        """Extra per-task values for the stream log (atom counts, growth events, ...)."""
        return {}
