"""Tiny models and separable data for fast tests (no downloads, no hub)."""

from __future__ import annotations

import copy
import functools

import torch
from transformers import BertConfig, BertForSequenceClassification

from wattpeft.data.loading import make_collator
from wattpeft.methods import entry, get_method
from wattpeft.training.trainer import Trainer, plan_schedule
from wattpeft.training.validation import validation_metrics


def tiny_bert(seed: int = 0, vocab: int = 60) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, max_position_embeddings=64,
    )
    return BertForSequenceClassification(config)


def separable_rows(n: int = 64, seed: int = 0, length: int = 12) -> list[dict]:
    """Random tokens with the label written in the first token: learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        ids = torch.randint(5, 50, (length,), generator=gen).tolist()
        ids[0] = 3 + label
        rows.append({"input_ids": ids, "label": label})
    return rows


collate = make_collator("classification", pad_id=0)


def run_cfg(**training) -> dict:
    base = {
        "epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "weight_decay": 0.0,
        "warmup_ratio": 0.1, "gradient_accumulation_steps": 2, "max_grad_norm": 1.0,
        "mixed_precision": "auto", "checkpoint_every": 3, "log_every": 2,
    }
    base.update(training)
    return {"run_id": "t--lora--b5--s0", "seed": 0, "training": base}


def make_method(name, params=None, budget=5.0, total_steps=12, inputs=None):
    """`name` for classification; `inputs` None: what its registry entry asks of other runs
    (`required_inputs`)."""
    return get_method(name)(default_params(name) if params is None else params,
                            budget, "classification", total_steps,
                            required_inputs(name) if inputs is None else inputs)


def default_params(name) -> dict:
    """LoRA-style defaults; spectral methods have no alpha (their configs refuse one)."""
    from wattpeft.methods import method_config
    from wattpeft.methods.spectral_config import GateConfig

    return {"dropout": 0.1} if issubclass(method_config(name), GateConfig) else {"alpha": 16, "dropout": 0.1}


def required_inputs(name) -> dict:
    """The `inputs` a method's registry entry asks for: {"runs": {m: train summary}} for each
    method in `after` (trained here, two steps on the tiny BERT, like the stage's summary:
    {"validation": the last validation record}). The energy table is left to its defaults."""
    after = entry(name).after
    return {"runs": {m: reference_summary(m) for m in after}} if after else {}


def reference_summary(name) -> dict:
    return copy.deepcopy(_reference_summary(name))


@functools.cache
def _reference_summary(name) -> dict:
    _, _, trainer = make_run(name, run_cfg(max_steps=2))
    return {"validation": trainer.train().validation}


def make_run(name, cfg, checkpoint_dir=None, params=None, inputs=None, **kwargs):
    """(method, model, trainer): `name` attached to a tiny BERT on separable rows."""
    rows = separable_rows()
    method = make_method(name, params, total_steps=plan_schedule(len(rows), cfg["training"]).total_steps,
                         inputs=inputs)
    model = method.attach(tiny_bert())
    trainer = Trainer(
        cfg, model, method, rows, collate, checkpoint_dir=checkpoint_dir, progress=False,
        evaluate=lambda m: validation_metrics(m, separable_rows(32, seed=1), collate, "classification"),
        **kwargs,
    )
    return method, model, trainer


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
