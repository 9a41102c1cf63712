"""Resumable training state: only what training changes (adapter weights, optimiser,
scheduler, fp16 gradient scaler, RNG, method state, position in the data), written atomically.

The frozen backbone is never copied, so a checkpoint of a 135M-parameter model with
LoRA stays a few MB.
"""

from __future__ import annotations

import json
import shutil
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..utils.io import atomic_path

LATEST = "LATEST"
KEEP = 2


@dataclass
class Position:
    """Where training stands: the next batch to run and the work done so far."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    next_batch: int = 0  # index of the next batch within `epoch`
    elapsed_s: float = 0.0
    loss_window: list[float] = field(default_factory=list)  # losses since the last log record
    skipped_steps: int = 0  # steps the fp16 gradient scaler skipped (overflow), in `step`
    skipped_in_a_row: int = 0  # the current streak, bounded by the trainer


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().cpu().contiguous().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    position: Position,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    method_state: dict[str, Any],
    log: list[dict[str, Any]],
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{position.step:07d}"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(
            {
                "position": position.__dict__,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "method": method_state,
                # fp16's loss scale: a resumed run must continue with the same one
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / "state.pt",
        )
        (tmp / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    with atomic_path(root / LATEST) as tmp:
        tmp.write_text(final.name)
    _prune(root, keep=KEEP)
    return final


def _prune(root: Path, keep: int) -> None:
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "state.pt").exists() else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Position, dict[str, Any], list[dict[str, Any]]]:
    """Restore model/optimiser/scheduler/scaler/RNG in place; return position, method state and log."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(weights) ^ {n for n, p in params.items() if p.requires_grad})
    if missing:
        raise RuntimeError(f"checkpoint {path} does not match the model: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):  # checkpoints before fp16 support have none
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines() if line]
    return Position(**state["position"]), state["method"], log
