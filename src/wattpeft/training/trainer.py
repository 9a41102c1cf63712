"""One trainer for every method: accelerate for device and precision, a seeded data
order that a resumed run replays exactly, checkpoints every N optimiser steps, and a
hard stop on a non-finite loss or gradient that keeps the last good checkpoint. Under fp16
an overflowing gradient is expected: the gradient scaler skips that step and the run goes on.

Several processes (training/distributed.py) train one model under DDP: every process walks
the same data order and takes every N-th row of each global batch, its loss weighted by its
share of the batch's loss units, so the batch size, the order, the logged loss and each
update are those of one process (up to float rounding, and to dropout and gate noise, which
each process draws for itself); only rank 0 writes checkpoints and shows progress, and every
rank resumes from the same checkpoint.
"""

from __future__ import annotations

import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from ..data.loading import IGNORE_INDEX
from ..methods.base import AdapterMethod
from .checkpoint import Position, latest_checkpoint, load_checkpoint, save_checkpoint
from .precision import resolve_mixed_precision

EvalFn = Callable[[nn.Module], dict[str, float]]
StepHook = Callable[[int], None]

# fp16 skips: the scaler halves its scale on each one, so a long streak means the
# gradients are genuinely non-finite, not that the scale is still settling.
MAX_SKIPPED_IN_A_ROW = 50


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/inf; the run stops and its last good checkpoint is kept."""


@dataclass
class TrainOutcome:
    steps: int
    epochs: int
    train_time_s: float
    final_loss: float
    resumed_from_step: int | None
    mixed_precision: str
    skipped_steps: int = 0  # optimiser steps the fp16 gradient scaler skipped (overflow)
    processes: int = 1  # data-parallel training processes (DDP world size)
    log: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


@dataclass
class Schedule:
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def plan_schedule(n_rows: int, training: dict[str, Any]) -> Schedule:
    """Batches and optimiser steps implied by the data size and the training config."""
    if n_rows == 0:
        raise ValueError("the training split is empty")
    batches = math.ceil(n_rows / training["batch_size"])
    if training.get("max_batches_per_epoch"):
        batches = min(batches, training["max_batches_per_epoch"])
    steps_per_epoch = math.ceil(batches / training["gradient_accumulation_steps"])
    total = training["epochs"] * steps_per_epoch
    if training.get("max_steps"):
        total = min(total, training["max_steps"])
    return Schedule(batches, steps_per_epoch, total)


def epoch_batches(n_rows: int, batch_size: int, n_batches: int, seed: int, epoch: int):
    """The epoch's batches of row indices: a permutation fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_rows, generator=gen).tolist()
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]


def shard(indices: list[int], world: int, rank: int) -> tuple[list[int], bool]:
    """This process's rows of a global batch (every world-th one) and whether they are its
    own: a process left without a row (a batch smaller than the world) runs one anyway,
    as DDP needs every process in each backward pass, and its loss then counts 0."""
    mine = indices[rank::world]
    return (mine, True) if mine else (indices[:1], False)


def loss_units(batch: dict[str, torch.Tensor]) -> int:
    """What the model's loss is a mean over: rows (one label per row), or for a language
    model its target tokens (labels shifted by one, IGNORE_INDEX skipped, as transformers does)."""
    labels = batch["labels"]
    if labels.dim() == 1:
        return labels.numel()
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def step_seed(seed: int, step: int, rank: int) -> int:
    """The random seed of one process for one optimiser step, under DDP: each process draws
    its own dropout masks and gate noise (not copies of its neighbour's), and a resumed run
    draws what the uninterrupted one did, whatever the checkpoint's (rank 0's) RNG state."""
    return random.Random(f"{seed}-{step}-{rank}").getrandbits(32)


class Trainer:
    def __init__(
        self,
        run_cfg: dict[str, Any],
        model: nn.Module,
        method: AdapterMethod,
        train_rows: Sequence[Any],
        collate: Callable[[list[Any]], dict[str, torch.Tensor]],
        *,
        checkpoint_dir: Path | None = None,
        evaluate: EvalFn | None = None,
        progress: bool = True,
        on_step_end: StepHook | None = None,
        record_fields: Callable[[], dict[str, Any]] | None = None,
    ):
        self.cfg = run_cfg
        self.training = run_cfg["training"]
        self.model = model
        self.method = method
        self.rows = train_rows
        self.collate = collate
        self.checkpoint_dir = checkpoint_dir
        self.evaluate = evaluate
        self.progress = progress
        self.on_step_end = on_step_end
        # Values the caller adds to every training record (a stream: the adapter's norm).
        self.record_fields = record_fields
        self.schedule = plan_schedule(len(train_rows), self.training)

    def _setup(self):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_mixed_precision(self.training["mixed_precision"], device)
        accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
        self.model.to(accelerator.device)
        optimizer = torch.optim.AdamW(
            self._param_groups(), lr=self.training["learning_rate"], weight_decay=self.training["weight_decay"]
        )
        scheduler = get_linear_schedule_with_warmup(
            optimizer,
            num_warmup_steps=int(round(self.training["warmup_ratio"] * self.schedule.total_steps)),
            num_training_steps=self.schedule.total_steps,
        )
        optimizer = accelerator.prepare_optimizer(optimizer)
        # Several processes: the forward pass goes through DDP, which averages gradients in
        # the backward pass. Everything else (hooks, checkpoints, evaluation) sees self.model.
        self.forward_model = self.model
        if accelerator.num_processes > 1:
            on_cuda = accelerator.device.type == "cuda"
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[accelerator.device.index] if on_cuda else None
            )
        return accelerator, precision, optimizer, scheduler

    def _param_groups(self) -> list[dict[str, Any]]:
        """The method's parameter groups (AdapterMethod.param_groups), checked: every trainable
        parameter in exactly one group, no frozen one; a group's missing "lr" or
        "weight_decay" is the training config's (AdamW's defaults here)."""
        trainable = {id(p) for p in self.model.parameters() if p.requires_grad}
        if not trainable:
            raise ValueError(f"{self.cfg['run_id']}: the method left no trainable parameter")
        groups = [dict(group, params=list(group["params"])) for group in self.method.param_groups(self.model)]
        grouped = [id(p) for group in groups for p in group["params"]]
        if len(grouped) != len(set(grouped)) or set(grouped) != trainable:
            raise ValueError(
                f"{self.cfg['run_id']}: {self.method.name}'s param_groups must hold every trainable parameter "
                f"exactly once and nothing else ({len(grouped)} grouped, {len(set(grouped))} distinct, "
                f"{len(trainable)} trainable)"
            )
        return [group for group in groups if group["params"]]

    def _resume(self, optimizer, scheduler, scaler) -> tuple[Position, list[dict[str, Any]], int | None]:
        path = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        if path is None:
            return Position(), [], None
        position, method_state, log = load_checkpoint(path, self.model, optimizer, scheduler, scaler)
        self.method.load_state_dict(self.model, method_state)
        if self._main:
            print(f"[wattpeft] {self.cfg['run_id']}: resuming from {path}", file=sys.stderr)
        return position, log, position.step

    def train(self) -> TrainOutcome:
        set_seed(self.cfg["seed"])
        accelerator, precision, optimizer, scheduler = self._setup()
        self._main = accelerator.is_main_process
        position, log, resumed = self._resume(optimizer, scheduler, accelerator.scaler)
        self._last_grad_norm = None  # until an optimiser step is applied
        self._last_task_loss = float("nan")  # the task loss of the last optimiser step
        sched = self.schedule
        bar = tqdm(
            total=sched.total_steps,
            initial=position.step,
            desc=self.cfg["run_id"],
            disable=not (self.progress and self._main),
            file=sys.stderr,
        )
        self.model.train()
        started = time.perf_counter() - position.elapsed_s
        last_loss = float("nan")
        ga = self.training["gradient_accumulation_steps"]
        while position.step < sched.total_steps and position.epoch < self.training["epochs"]:
            batches = epoch_batches(
                len(self.rows), self.training["batch_size"], sched.batches_per_epoch,
                self.cfg["seed"], position.epoch,
            )
            while position.next_batch < len(batches) and position.step < sched.total_steps:
                group = batches[position.next_batch : position.next_batch + ga]
                last_loss = self._optimizer_step(accelerator, optimizer, scheduler, group, position)
                position.loss_window.append(last_loss)
                position.next_batch += len(group)
                position.step += 1
                position.elapsed_s = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}")
                if position.step % self.training["log_every"] == 0 or position.step == sched.total_steps:
                    log.append(self._train_record(position, optimizer))
                    position.loss_window = []
                if self.on_step_end:
                    self.on_step_end(position.step)
                if self._main and self.checkpoint_dir and position.step % self.training["checkpoint_every"] == 0:
                    self._checkpoint(position, optimizer, scheduler, log, accelerator.scaler)
            if position.next_batch >= len(batches):
                log.append(self._eval_record(position))
                position.epoch += 1
                position.next_batch = 0
        bar.close()
        validation = next((r for r in reversed(log) if r.get("split") == "validation"), None)
        if validation is None:  # stopped by max_steps inside an epoch
            log.append(self._eval_record(position))
            validation = log[-1]
        return TrainOutcome(
            steps=position.step,
            epochs=position.epoch,
            train_time_s=time.perf_counter() - started,
            final_loss=last_loss,
            resumed_from_step=resumed,
            mixed_precision=precision,
            skipped_steps=position.skipped_steps,
            processes=accelerator.num_processes,
            log=log,
            validation={k: v for k, v in validation.items() if k not in ("step", "epoch", "split")},
        )

    def _optimizer_step(self, accelerator, optimizer, scheduler, group, position) -> float:
        """Forward/backward over `group` (gradient accumulation), then one optimiser step.
        Returns the step's loss: under DDP the mean over the whole global batches."""
        total = task_total = 0.0
        world, rank = accelerator.num_processes, accelerator.process_index
        if world > 1:
            set_seed(step_seed(self.cfg["seed"], position.step, rank))
        for i, indices in enumerate(group):
            rows, own = shard(indices, world, rank) if world > 1 else (indices, True)
            batch = self.collate([self.rows[j] for j in rows])
            factor = self._shard_factor(batch, indices, world) if own else 0.0
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            last = i == len(group) - 1  # DDP averages gradients once, after the last micro-batch
            with nullcontext() if last else accelerator.no_sync(self.forward_model):
                with accelerator.autocast():
                    loss = self.forward_model(**batch).loss
                    task = loss.detach()
                    extra = self.method.extra_loss(self.model, position.step)
                    if extra is not None:
                        loss = loss + extra
                self._require_finite(loss, "loss", position)
                if factor != 1.0:
                    loss = loss * factor
                    task = task * factor
                accelerator.backward(loss / len(group))
            total += loss.item() / len(group)
            task_total += task.item() / len(group)
        if world > 1:  # the global batches' mean: what one process would have logged
            both = torch.tensor([total, task_total], dtype=torch.float64, device=accelerator.device)
            total, task_total = accelerator.reduce(both, reduction="mean").tolist()
        self._last_task_loss = task_total
        grad_norm = accelerator.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.training["max_grad_norm"]
        )
        if accelerator.scaler is None:  # nothing would skip this step: stop before it
            self._require_finite(grad_norm, "gradient norm", position)
        optimizer.step()  # with a scaler: skipped if the gradients overflowed
        if optimizer.step_was_skipped:
            self._count_skip(accelerator.scaler, position)
        else:
            position.skipped_in_a_row = 0
            self._last_grad_norm = float(grad_norm)
            scheduler.step()
            self.method.after_optimizer_step(self.model, position.step + 1)
        optimizer.zero_grad(set_to_none=True)
        return total

    def _shard_factor(self, batch: dict[str, torch.Tensor], indices: list[int], world: int) -> float:
        """The factor on a shard's mean loss that makes DDP's mean of the processes' gradients
        the gradient of the whole batch's mean loss: world x the shard's share of the loss
        units (1 when the batch splits evenly; 1 for one process). Exact for the task loss; a
        method's extra loss that is a mean over the shard's rows is weighted the same way."""
        if world == 1:
            return 1.0
        whole = loss_units(self.collate([self.rows[j] for j in indices]))
        return world * loss_units(batch) / max(whole, 1)

    def _count_skip(self, scaler, position: Position) -> None:
        """A skipped step is not an update: the scheduler and the method's hook (AdaLoRA
        reads the gradients) wait for the next applied step; the data order still moves on."""
        position.skipped_steps += 1
        position.skipped_in_a_row += 1
        if position.skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
            self._stop(
                f"the fp16 gradient scaler skipped {position.skipped_in_a_row} optimiser steps in a "
                f"row (gradients non-finite, loss scale now {scaler.get_scale():g}) up to step "
                f"{position.step + 1} (epoch {position.epoch})",
                "Lower training.learning_rate, use mixed_precision bf16 or no, or check the data.",
            )

    def _require_finite(self, value: torch.Tensor, what: str, position: Position) -> None:
        if torch.isfinite(value).all():
            return
        self._stop(
            f"{what} became {value.item()} at optimiser step {position.step + 1} (epoch {position.epoch})",
            "Lower training.learning_rate or check the data for bad rows.",
        )

    def _stop(self, what_happened: str, advice: str) -> None:
        last = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        kept = f"last good checkpoint kept at {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"{self.cfg['run_id']}: {what_happened}; training stopped, {kept}. {advice}"
        )

    def _train_record(self, position, optimizer) -> dict[str, Any]:
        """`loss`: the mean over the steps since the last record (task loss plus the method's
        extra loss); `loss_task` and the method's named terms (`loss_terms`): the last step's,
        which a resumed run reproduces exactly (the window of a record may span a checkpoint)."""
        window = position.loss_window
        terms = self.method.loss_terms()
        clashing = sorted(name for name in terms if not name.startswith("loss_") or name == "loss_task")
        if clashing:
            raise ValueError(f"{self.method.name}.loss_terms: {clashing}: names must start with 'loss_' "
                             "and 'loss_task' is the trainer's")
        return {
            "step": position.step,
            "epoch": position.epoch,
            "loss": sum(window) / max(len(window), 1),
            "loss_task": self._last_task_loss,
            **terms,
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": self._last_grad_norm,  # of the last applied step
            "skipped_steps": position.skipped_steps,
            "elapsed_s": round(position.elapsed_s, 3),
            **self.method.log_fields(),
            **(self.record_fields() if self.record_fields else {}),
        }

    def _eval_record(self, position) -> dict[str, Any]:
        record = {"step": position.step, "epoch": position.epoch, "split": "validation"}
        if self.evaluate is not None:
            self.model.eval()
            record.update(self.evaluate(self.model))
            record.update(self.method.validation_record(self.model))
            self.model.train()
        return record

    def _checkpoint(self, position, optimizer, scheduler, log, scaler) -> None:
        for name, param in self.model.named_parameters():
            if param.requires_grad and not torch.isfinite(param).all():
                self._require_finite(param, f"parameter {name}", position)
        save_checkpoint(
            self.checkpoint_dir, position, self.model, optimizer, scheduler,
            self.method.state_dict(self.model), log, scaler,
        )
