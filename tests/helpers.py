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
    (`required_inputs`). A method with a device table gets its target device unless `params`
    names one (the deployment setting, like an input)."""
    params = default_params(name) if params is None else params
    if "device_table" in entry(name).needs and isinstance(params, dict):
        params = {"target_device": TARGET_DEVICE, **params}
    return get_method(name)(params, budget, "classification", total_steps,
                            required_inputs(name) if inputs is None else inputs)


def default_params(name) -> dict:
    """LoRA-style defaults; spectral methods have no alpha (their configs refuse one)."""
    from wattpeft.methods import method_config
    from wattpeft.methods.spectral_config import GateConfig

    return {"dropout": 0.1} if issubclass(method_config(name), GateConfig) else {"alpha": 16, "dropout": 0.1}


def required_inputs(name) -> dict:
    """The `inputs` a method's registry entry asks for: {"runs": {m: train summary}} for each
    method in `after` (trained here, two steps on the tiny BERT, like the stage's summary:
    {"validation": the last validation record}); "device_table": `device_table()`;
    "surrogate": `surrogate()`. The energy table is left to its defaults."""
    needs = entry(name).needs
    inputs = {"runs": {m: reference_summary(m) for m in entry(name).after}} if entry(name).after else {}
    if "device_table" in needs:
        inputs["device_table"] = device_table()
    if "surrogate" in needs:
        inputs["surrogate"] = surrogate()
    return inputs


# ---------------------------------------------------------------- the hardware-surrogate family's inputs

TARGET_DEVICE = "Raspberry-Pi-4"  # the surrogate's unseen device, calibrated on 5 of its rows
TABLE_DEVICES = (TARGET_DEVICE, "Jetson-Orin-NX", "MacBook-M2")
TINY_GRID = {"seq_len": [8, 16, 32, 64, 128, 256], "kept_layers": [1, "all"], "kept_heads": [1, "all"],
             "kept_ranks": [0, 1, 2, 4, 8], "param_bits": [8, 16]}  # 240 rows per device


def tiny_bert_shape():
    from wattpeft.devices.roofline import ModelShape

    return ModelShape.from_hf_config(tiny_bert().config.to_dict(), name="tiny-bert", lora_targets=["query", "value"])


def device_table():
    """Three simulated devices' roofline rows for the tiny BERT (seeded, noisy), as the
    family's device table (inputs["device_table"])."""
    return _device_table().copy()


@functools.cache
def _device_table():
    import pandas as pd

    from wattpeft.devices.grid import configuration_grid
    from wattpeft.devices.roofline import SIMULATED_DEVICES, simulate

    shape = tiny_bert_shape()
    grid = configuration_grid(shape, TINY_GRID)
    return pd.concat([simulate(SIMULATED_DEVICES[name], shape, grid, seed=0) for name in TABLE_DEVICES],
                     ignore_index=True)


@functools.cache
def surrogate():
    """(meta-surrogate, calibration) as the store loads them (inputs["surrogate"]): trained a
    few steps on every device but TARGET_DEVICE, calibrated on 5 of TARGET_DEVICE's rows."""
    from wattpeft.surrogate.calibration import fit_calibration
    from wattpeft.surrogate.train import log_targets, train_surrogate

    table = _device_table()
    seen, unseen = table[table["device"] != TARGET_DEVICE], table[table["device"] == TARGET_DEVICE]
    model = train_surrogate(seen, {**tiny_bert_shape().totals(), "kept_ranks": 8},
                            {"steps": 30, "rows_per_device": 32, "progress": False})
    shots = unseen.iloc[:5]
    with torch.no_grad():
        logs = model(model.features(shots), model.tag(None, len(shots)))
    model.calibrated_device = TARGET_DEVICE  # as load_surrogate records it
    return model, fit_calibration(logs, log_targets(shots))


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
