"""A surrogate on disk: a folder with `surrogate.safetensors` (the weights) and
`surrogate.json` (everything else); no pickle anywhere. `save_surrogate` and
`load_surrogate` take the folder or the path of its surrogate.json (the file a workflow
rule names as its output).

surrogate.json:
    format, version         "wattpeft.meta_surrogate", STORE_VERSION
    architecture            features, targets, heads, trunk, hidden, embed, outputs
    devices                 the training devices in tag order
    model, totals           the backbone and its totals (the features' denominators)
    normalisation           feature and log-target means and deviations
    training, table_hash    the meta-training config and the sha256 of the table (or null)
    calibration             null, or {device, space, a, b, points} when one was fitted
    weights_sha256          the sha256 of surrogate.safetensors

Loading refuses another format or version, an architecture this code does not build
(features, targets, heads, trunk or outputs differ), weights whose names or shapes differ
from the architecture's and weights that are not the ones the JSON was written with (their
sha256), each with a `SurrogateStoreError` that says what differs. Each file is written
atomically, the weights first and the JSON last: a save that fails half-way leaves a pair
that loading refuses, never one it reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils.io import atomic_path, read_json, sha256_file, write_json
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
    """Write the store (a folder, or its surrogate.json); returns the folder. `calibration`
    (fitted on `calibrated_device`) is optional."""
    folder = store_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    write_json(folder / METADATA, metadata(model, calibration, calibrated_device, sha256_file(folder / WEIGHTS)))
    return folder


def store_folder(path: str | Path) -> Path:
    """The store's folder, from itself or from its surrogate.json."""
    path = Path(path)
    return path.parent if path.name == METADATA else path


def metadata(model: MetaSurrogate, calibration: Calibration | None, calibrated_device: str | None,
             weights_sha256: str) -> dict[str, Any]:
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
        "weights_sha256": weights_sha256,
    }


def load_surrogate(path: str | Path) -> tuple[MetaSurrogate, Calibration | None]:
    """(the surrogate in eval mode, its calibration or None) from a folder or its surrogate.json."""
    path = store_folder(path)
    data = read_metadata(path)
    arch = data["architecture"]
    model = MetaSurrogate(data["devices"], data["totals"], data["model"], arch["hidden"], arch["embed"],
                          Normalisation.from_dict(data["normalisation"]))
    model.load_state_dict(checked_weights(path, model, data.get("weights_sha256")))
    model.provenance = {"training": data.get("training"), "table_hash": data.get("table_hash")}
    calibration = Calibration.from_dict(data["calibration"]) if data.get("calibration") else None
    # Which device the calibration was fitted on: a method must not price another with it.
    model.calibrated_device = (data.get("calibration") or {}).get("device")
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


def checked_weights(path: Path, model: MetaSurrogate, sha256: str | None) -> dict[str, torch.Tensor]:
    try:
        weights = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise SurrogateStoreError(f"{path}: no readable {WEIGHTS} ({exc})") from exc
    if sha256_file(path / WEIGHTS) != sha256:
        raise SurrogateStoreError(f"{path}: {WEIGHTS} is not the file {METADATA} was written with "
                                  f"(sha256 {sha256_file(path / WEIGHTS)[:12]}, recorded {str(sha256)[:12]})")
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
