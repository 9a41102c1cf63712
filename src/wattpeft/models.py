"""Backbones and tokenizers for each task type, from a folder or (for users with a hub) an id."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from .data import tokenise


def load_tokenizer(source: str | Path):
    """The model's tokenizer (as tokenisation loads it), with a pad token for batching."""
    tokenizer = tokenise.load_tokenizer(source)
    if tokenizer.pad_token_id is None:
        # Decoder-only models often ship without a pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(source: str | Path, task: str, label_names: list[str] | None = None) -> nn.Module:
    """A pretrained model with the head the task needs, in float32 (CPU-safe)."""
    source = str(source)
    if task == "classification":
        if not label_names:
            raise ValueError("classification needs label names")
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    elif task in ("summarisation", "lm", "text2text"):
        model = AutoModelForCausalLM.from_pretrained(source)
    else:
        raise ValueError(f"unsupported task {task!r}")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model
