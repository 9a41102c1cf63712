"""Cheap validation during training and search: mean task loss, plus accuracy for classifiers.

The loss is computed here from the logits (the model is called without labels), not
taken from `outputs.loss`: a method may add regularisers to that (peft's AdaLoRA adds
its orthogonality penalty), and validation losses must compare across methods.
Classification: mean cross-entropy per example; causal LM (summarisation, lm, text2text): mean
next-token cross-entropy per target token (labels shifted by one, -100 ignored);
text2text trains and validates as a causal LM on its prompt -> target rows.
The full evaluation (ROUGE with generation, latency) runs later on the hardened export.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # label value that cross-entropy skips (as the collator pads)


def task_loss_sum(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[float, int]:
    """(summed task cross-entropy, number of terms) for one batch."""
    logits = logits.float()
    if task == "classification":
        return F.cross_entropy(logits, labels, reduction="sum").item(), labels.numel()
    targets = labels[:, 1:]  # token t predicts token t + 1
    total = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return total.item(), int((targets != IGNORE_INDEX).sum())


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
    loss_sum, n_terms, n_items, correct = 0.0, 0, 0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits
        batch_sum, batch_terms = task_loss_sum(logits, labels, task)
        loss_sum += batch_sum
        n_terms += batch_terms
        n_items += labels.shape[0]
        if task == "classification":
            correct += int((logits.argmax(-1) == labels).sum())
    if n_terms == 0:
        raise ValueError("no target tokens in the validation split: every label is -100")
    metrics = {"eval_loss": loss_sum / n_terms}
    if task == "classification":
        metrics["accuracy"] = correct / n_items
    return metrics
