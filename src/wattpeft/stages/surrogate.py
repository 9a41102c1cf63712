"""Meta-surrogate stages (seed 002): train the surrogate on every device but the family's
unseen one and calibrate it there on k_shot measurements (what MetaS-PEFT trains
through), and judge the surrogate leave-one-device-out against per-device regressions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..devices.table import read_table
from .devices import model_shape


def surrogate_totals(devices_cfg: dict[str, Any], model_dir: Path, model_name: str) -> dict[str, Any]:
    """Denominators of the surrogate's features: the backbone's layers and heads and the
    largest LoRA rank any table row holds."""
    shape = model_shape(model_dir, model_name, devices_cfg.get("adapted_modules"))
    grids = [devices_cfg["grid"], devices_cfg.get("measure") or {"kept_ranks": [1]}]
    return {**shape.totals(), "kept_ranks": max(max(g["kept_ranks"]) for g in grids) or 1}


def calibration_rows(table: pd.DataFrame, device: str, k_shot: int, seed: int) -> pd.DataFrame:
    """The k_shot rows of `device` measured for calibration: a seeded random draw, as a user
    would run k random configurations on the new device."""
    rows = table[table["device"] == device]
    if len(rows) < k_shot:
        raise ValueError(f"surrogate.unseen_device {device!r} has {len(rows)} rows in the device table; "
                         f"calibration needs {k_shot}")
    picked = np.random.default_rng(seed).choice(len(rows), size=k_shot, replace=False)
    return rows.iloc[np.sort(picked)]


def run_surrogate(table_path: Path, devices_cfg: dict[str, Any], surrogate_cfg: dict[str, Any], model_dir: Path,
                  model_name: str, out_dir: Path) -> dict[str, Any]:
    """Meta-train on every device but the unseen one, calibrate on k_shot of its rows, store."""
    import torch

    from ..surrogate.calibration import fit_calibration
    from ..surrogate.model import TARGETS
    from ..surrogate.store import save_surrogate
    from ..surrogate.config import MetaTrainConfig
    from ..surrogate.train import train_surrogate

    config = MetaTrainConfig.from_mapping(surrogate_cfg.get("training"), where="surrogate.training")
    table = read_table(table_path)
    unseen = surrogate_cfg["unseen_device"]
    if unseen not in set(table["device"]):
        raise ValueError(f"surrogate.unseen_device {unseen!r} is not in the device table ({sorted(set(table['device']))})")
    totals = surrogate_totals(devices_cfg, model_dir, model_name)
    model = train_surrogate(table[table["device"] != unseen], totals, config)
    shots = calibration_rows(table, unseen, config.k_shot, config.seed)
    with torch.no_grad():
        x = model.features(shots)
        predicted = model(x, model.tag(None, len(shots)))
    measured = torch.log(torch.tensor(shots[list(TARGETS)].to_numpy(dtype=float), dtype=predicted.dtype))
    calibration = fit_calibration(predicted, measured)
    save_surrogate(out_dir, model, calibration, unseen)
    return {"unseen_device": unseen, "calibration_shots": len(shots), "calibration": calibration.as_dict()}


def run_surrogate_evaluation(table_path: Path, devices_cfg: dict[str, Any], surrogate_cfg: dict[str, Any],
                             model_dir: Path, model_name: str, out_path: Path) -> pd.DataFrame:
    """Every device held out in turn: the 5-shot meta-surrogate against ridge regressions
    fitted on 5 and on 200 of its rows (surrogate/evaluate.py), one row per (device,
    predictor, target), each held-out device's source beside it."""
    from ..surrogate.config import MetaTrainConfig
    from ..surrogate.evaluate import EvalProtocol, evaluate
    from ..utils.io import atomic_path

    table = read_table(table_path)
    totals = surrogate_totals(devices_cfg, model_dir, model_name)
    config = MetaTrainConfig.from_mapping(surrogate_cfg.get("training"), where="surrogate.training")
    protocol = EvalProtocol(k_shot=config.k_shot, **surrogate_cfg.get("evaluation", {}))
    frame = evaluate(table, totals, config, protocol)
    with atomic_path(out_path) as tmp:
        frame.to_parquet(tmp, index=False)
    return frame
