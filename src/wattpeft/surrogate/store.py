"""A surrogate on disk: a folder with `surrogate.safetensors` (the weights) and
`surrogate.json` (everything else); no pickle anywhere.

surrogate.json:
    format, version         "wattpeft.meta_surrogate", STORE_VERSION
    architecture            features, targets, heads, trunk, hidden, embed, outputs
    devices                 the training devices in tag order
    model, totals           the backbone and its totals (the features' denominators)
    normalisation           feature and log-target means and deviations
    training, table_hash    the meta-training config and the sha256 of the table (or null)
    calibration             null, or {device, space, a, b, points} when one was fitted

Loading refuses another format or version, an architecture this code does not build
(features, targets, heads, trunk or outputs differ) and weights whose names or shapes
differ from the architecture's, each with a `SurrogateStoreError` that says what differs.
The folder is written atomically: a failed save leaves the old store as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils.io import atomic_path, read_json, write_json
from .calibration import Calibration
from .model import MetaSurrogate, Normalisation, architecture

FORMAT = "wattpeft.meta_surrogate"
STORE_VERSION = 1
WEIGHTS, METADATA = "surrogate.safetensors", "surrogate.json"
FIXED_ARCHITECTURE = ("features", "targets", "heads", "trunk", "outputs")


class SurrogateStoreError(ValueError):
    """A store that this code cannot load; the message names the folder and what differs."""


def save_surrogate(path: str | Path, model: MetaSurrogate, calibration: Calibration | None = None,
                   calibrated_device: str | None = None) -> Path:
    """Write the store folder at `path`; `calibration` (for `calibrated_device`) is optional."""
    path = Path(path)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save_file(weights, str(tmp / WEIGHTS))
        write_json(tmp / METADATA, metadata(model, calibration, calibrated_device))
    return path


def metadata(model: MetaSurrogate, calibration: Calibration | None, calibrated_device: str | None) -> dict[str, Any]:
    fitted = None if calibration is None else {"device": calibrated_device, **calibration.as_dict()}
    return {
        "format": FORMAT,
        "version": STORE_VERSION,
        "architecture": model.architecture(),
        "devices": list(model.devices),
        "model": model.model_name,
        "totals": model.totals,
        "normalisation": model.normalisation.as_dict(),
        "training": model.provenance.get("training"),
        "table_hash": model.provenance.get("table_hash"),
        "calibration": fitted,
    }


def load_surrogate(path: str | Path) -> tuple[MetaSurrogate, Calibration | None]:
    """(the surrogate in eval mode, its calibration or None)."""
    path = Path(path)
    data = read_metadata(path)
    arch = data["architecture"]
    model = MetaSurrogate(data["devices"], data["totals"], data["model"], arch["hidden"], arch["embed"],
                          Normalisation.from_dict(data["normalisation"]))
    model.load_state_dict(checked_weights(path, model))
    model.provenance = {"training": data.get("training"), "table_hash": data.get("table_hash")}
    calibration = Calibration.from_dict(data["calibration"]) if data.get("calibration") else None
    return model.eval(), calibration


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path / METADATA)
    except (OSError, ValueError) as exc:
        raise SurrogateStoreError(f"{path}: no readable {METADATA} ({exc})") from exc
    if data.get("format") != FORMAT or data.get("version") != STORE_VERSION:
        raise SurrogateStoreError(f"{path}: format {data.get('format')!r} version {data.get('version')!r}; this "
                                  f"code reads {FORMAT!r} version {STORE_VERSION}")
    check_architecture(path, data.get("architecture") or {})
    return data


def check_architecture(path: Path, stored: dict[str, Any]) -> None:
    sizes = (stored.get("hidden"), stored.get("embed"))
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in sizes):
        raise SurrogateStoreError(f"{path}: architecture hidden/embed {sizes} are not positive integers")
    expected = architecture(*sizes)
    differing = [key for key in FIXED_ARCHITECTURE if stored.get(key) != expected[key]]
    if differing:
        details = "; ".join(f"{key}: stored {stored.get(key)!r}, this code {expected[key]!r}" for key in differing)
        raise SurrogateStoreError(f"{path}: the architecture does not match this code's ({details})")


def checked_weights(path: Path, model: MetaSurrogate) -> dict[str, torch.Tensor]:
    try:
        weights = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise SurrogateStoreError(f"{path}: no readable {WEIGHTS} ({exc})") from exc
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    if found != expected:
        differing = sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name))
        details = "; ".join(f"{name}: stored {found.get(name)}, architecture {expected.get(name)}"
                            for name in differing)
        raise SurrogateStoreError(f"{path}: the weights do not match the stored architecture ({details})")
    return weights


__all__ = ["FORMAT", "METADATA", "STORE_VERSION", "SurrogateStoreError", "WEIGHTS", "load_surrogate",
           "save_surrogate"]
