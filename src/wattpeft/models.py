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


PRECISIONS = ("fp32", "bf16", "nf4")


def precision_kwargs(precision: str) -> dict:
    """from_pretrained arguments for a backbone precision. nf4: 4-bit NormalFloat weights
    through bitsandbytes (QLoRA's setting) with float32 compute, never fp16 (on a CPU fp16
    matmuls are about 2,000x slower than bf16); bitsandbytes quantises every linear layer
    but the output head."""
    import torch

    if precision == "fp32":
        return {}
    if precision == "bf16":
        return {"dtype": torch.bfloat16}
    if precision == "nf4":
        from transformers import BitsAndBytesConfig

        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=torch.float32)
        return {"quantization_config": config, "device_map": "cuda" if torch.cuda.is_available() else "cpu"}
    raise ValueError(f"unknown backbone precision {precision!r}; precisions: {PRECISIONS}")


def load_backbone(source: str | Path, task: str, label_names: list[str] | None = None,
                  precision: str = "fp32") -> nn.Module:
    """A pretrained model with the head the task needs, in float32 (CPU-safe) unless a
    precision is asked for (`precision_kwargs`)."""
    source = str(source)
    if task == "classification":
        if not label_names:
            raise ValueError("classification needs label names")
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            **precision_kwargs(precision),
        )
    elif task in ("summarisation", "lm", "text2text"):
        model = AutoModelForCausalLM.from_pretrained(source, **precision_kwargs(precision))
    else:
        raise ValueError(f"unsupported task {task!r}")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model
