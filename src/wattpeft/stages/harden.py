"""Hardening: load the trained adapter onto a fresh backbone and export the inference
model (for LoRA/AdaLoRA: merged weights), with the tokenizer and an export card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils.io import atomic_path, read_json, write_json
from .common import model_source, open_run_data, pin_threads


def run_harden(run_config_path: Path, adapter_dir: Path, data_dir: Path, model_dir: Path, out_dir: Path, threads: int = 1) -> dict:
    from ..methods import get_method
    from ..methods.base import count_params

    pin_threads(threads)
    run_cfg = read_json(run_config_path)
    data = open_run_data(data_dir)
    tokenizer, base = data.load_model(model_source(model_dir))
    method = get_method(run_cfg["method"])(run_cfg["method_params"], run_cfg["budget"], data.task, 1)
    hardened = method.harden(method.load(base, Path(adapter_dir)))
    card: dict[str, Any] = {
        "run_id": run_cfg["run_id"],
        "method": run_cfg["method"],
        "task": data.task,
        "label_names": data.label_names,
        "params": count_params(hardened),
        "dtype": str(next(hardened.parameters()).dtype).replace("torch.", ""),
        "hardening": "merged adapter weights into the base weights (peft merge_and_unload, safe_merge)",
    }
    with atomic_path(out_dir) as tmp:
        hardened.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / "export.json", card)
    return card
