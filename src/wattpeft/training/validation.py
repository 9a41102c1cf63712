"""Cheap validation during training and search: mean loss, plus accuracy for classifiers.

The full evaluation (ROUGE with generation, latency) runs later on the hardened export.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn


@torch.no_grad()
def validation_metrics(
    model: nn.Module,
    rows: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    task: str,
    batch_size: int = 32,
) -> dict[str, float]:
    if len(rows) == 0:
        raise ValueError("the validation split is empty")
    device = next(model.parameters()).device
    loss_sum, n_items, correct = 0.0, 0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        size = batch["input_ids"].shape[0]
        loss_sum += float(out.loss) * size
        n_items += size
        if task == "classification":
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
    metrics = {"eval_loss": loss_sum / n_items}
    if task == "classification":
        metrics["accuracy"] = correct / n_items
    return metrics
