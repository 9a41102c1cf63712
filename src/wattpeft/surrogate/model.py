"""The meta-surrogate psi(s, device) -> log (energy J, latency ms, peak power W).

Features of a configuration s (`features`, in this order, `FEATURES`):

    log_seq_len  = log(seq_len)
    layer_share  = kept_layers / the model's layers
    head_share   = kept_heads / the model's heads (per layer)
    rank_share   = kept_ranks / the largest LoRA rank (0: no adapter path)
    bits_share   = param_bits / 16

The totals come from the backbone: {**ModelShape.totals(), "kept_ranks": max_rank}. The
features carry no model size, so one surrogate serves one backbone. They are torch
operations on whatever the caller passes: a gated method feeds its *expected* kept counts
as float tensors, and the predictions are differentiable in them.

Device tag: a weight vector over the training devices (`devices`, in order): one-hot for a
known device, a mixup of two (lambda, 1 - lambda) in training, the uniform vector for an
unseen device. The device's embedding is tag @ embedding table (`embed` = 8 dimensions).

Network: [standardised features, embedding] -> Linear(5 + 8, 64) -> ReLU -> Linear(64, 64)
-> ReLU (the shared trunk), then three heads Linear(64, 1): energy, latency, peak power.
Each head predicts the standardised log of its metric; `forward` undoes the
standardisation and returns natural logs, `predict` returns natural units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .calibration import Calibration

FEATURES = ("log_seq_len", "layer_share", "head_share", "rank_share", "bits_share")
TARGETS = ("energy_j", "latency_ms", "peak_power_w")
HEADS = ("energy", "latency", "power")  # one head per target, in the order of TARGETS
TOTAL_COLUMNS = ("kept_layers", "kept_heads", "kept_ranks")
BITS_SCALE = 16.0
HIDDEN, EMBED = 64, 8


def as_float_tensor(value: Any) -> torch.Tensor:
    """A float32 tensor; a tensor keeps its autograd graph (the cast is differentiable)."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float32)
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float32)


def check_totals(totals: Mapping[str, Any]) -> dict[str, float]:
    missing = [column for column in TOTAL_COLUMNS if column not in totals]
    if missing:
        raise ValueError(f"totals: missing {missing}; give {{**ModelShape.totals(), 'kept_ranks': max_rank}}")
    values = {column: float(totals[column]) for column in TOTAL_COLUMNS}
    if min(values.values()) <= 0:
        raise ValueError(f"totals must be positive, got {values}")
    return values


def features(rows: Mapping[str, Any], totals: Mapping[str, Any]) -> torch.Tensor:
    """(n, 5) float32 features of the configurations in `rows` (a DataFrame or a mapping of
    the s columns to numbers, arrays or tensors; scalars broadcast). Differentiable in
    tensor inputs."""
    limits = check_totals(totals)
    seq_len, layers, heads, ranks, bits = torch.broadcast_tensors(
        *(torch.atleast_1d(as_float_tensor(rows[column]))
          for column in ("seq_len", "kept_layers", "kept_heads", "kept_ranks", "param_bits")))
    return torch.stack([
        torch.log(seq_len),
        layers / limits["kept_layers"],
        heads / limits["kept_heads"],
        ranks / limits["kept_ranks"],
        bits / BITS_SCALE,
    ], dim=-1)


@dataclass(frozen=True)
class Normalisation:
    """Standardisation of the features and of the log targets (means and deviations)."""

    feature_mean: tuple[float, ...] = (0.0,) * len(FEATURES)
    feature_std: tuple[float, ...] = (1.0,) * len(FEATURES)
    target_mean: tuple[float, ...] = (0.0,) * len(TARGETS)
    target_std: tuple[float, ...] = (1.0,) * len(TARGETS)

    @classmethod
    def fitted(cls, feature_rows: torch.Tensor, log_targets: torch.Tensor) -> "Normalisation":
        """From training rows; NaN targets are skipped, a constant column gets deviation 1."""
        return cls(*nan_moments(feature_rows), *nan_moments(log_targets))

    def as_dict(self) -> dict[str, list[float]]:
        return {name: list(values) for name, values in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> "Normalisation":
        return cls(**{name: tuple(float(v) for v in values) for name, values in data.items()})


def nan_moments(values: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-column (means, deviations) over the finite entries; 0 and 1 for an empty column."""
    array = values.detach().double().numpy()
    means, stds = [], []
    for column in array.T:
        finite = column[np.isfinite(column)]
        mean = float(finite.mean()) if finite.size else 0.0
        std = float(finite.std()) if finite.size else 0.0
        means.append(mean)
        stds.append(std if std > 1e-8 else 1.0)
    return tuple(means), tuple(stds)


class MetaSurrogate(nn.Module):
    """psi(features, tag) -> natural logs of (energy J, latency ms, peak power W)."""

    def __init__(self, devices: Sequence[str], totals: Mapping[str, Any], model_name: str = "",
                 hidden: int = HIDDEN, embed: int = EMBED, normalisation: Normalisation | None = None):
        super().__init__()
        if not devices or len(set(devices)) != len(devices):
            raise ValueError(f"devices must be distinct and at least one, got {list(devices)}")
        self.devices = tuple(devices)
        self.totals = check_totals(totals)
        self.model_name = model_name
        self.hidden, self.embed = int(hidden), int(embed)
        self.device_embedding = nn.Embedding(len(self.devices), self.embed)
        self.trunk = nn.Sequential(nn.Linear(len(FEATURES) + self.embed, self.hidden), nn.ReLU(),
                                   nn.Linear(self.hidden, self.hidden), nn.ReLU())
        self.heads = nn.ModuleDict({head: nn.Linear(self.hidden, 1) for head in HEADS})
        self.provenance: dict[str, Any] = {}  # training config and table hash, set by train.py
        self.set_normalisation(normalisation or Normalisation())

    def set_normalisation(self, normalisation: Normalisation) -> None:
        self.normalisation = normalisation
        for name, values in asdict(normalisation).items():
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)

    def architecture(self) -> dict[str, Any]:
        return architecture(self.hidden, self.embed)

    def features(self, rows: Mapping[str, Any]) -> torch.Tensor:
        """`features(rows, self.totals)`."""
        return features(rows, self.totals)

    def tag(self, device: str | None, rows: int) -> torch.Tensor:
        """(rows, n_devices): one-hot for a training device, uniform for any other (None)."""
        if device in self.devices:
            return one_hot_tags([self.devices.index(device)] * rows, len(self.devices))
        return torch.full((rows, len(self.devices)), 1.0 / len(self.devices))

    def forward(self, feature_rows: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        """(n, 3) natural logs of energy J, latency ms, peak power W."""
        standardised = (feature_rows - self.feature_mean) / self.feature_std
        embedded = tag.to(self.device_embedding.weight.dtype) @ self.device_embedding.weight
        hidden = self.trunk(torch.cat([standardised, embedded], dim=-1))
        outputs = torch.cat([self.heads[head](hidden) for head in HEADS], dim=-1)
        return outputs * self.target_std + self.target_mean

    def predict(self, feature_rows: torch.Tensor, tag: torch.Tensor,
                calibration: Calibration | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy_j, latency_ms, peak_power_w) in natural units, each (n,); `calibration`
        corrects the log outputs first."""
        logs = self(feature_rows, tag)
        if calibration is not None:
            logs = calibration.apply(logs)
        energy, latency, power = torch.exp(logs).unbind(dim=-1)
        return energy, latency, power


def architecture(hidden: int, embed: int) -> dict[str, Any]:
    """What a store must match to be loaded into this code."""
    return {"features": list(FEATURES), "targets": list(TARGETS), "heads": list(HEADS),
            "trunk": "2 x (Linear, ReLU)", "hidden": int(hidden), "embed": int(embed), "outputs": "natural log"}


def one_hot_tags(indices: Sequence[int] | torch.Tensor, n_devices: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.as_tensor(indices, dtype=torch.long), n_devices).to(torch.float32)


__all__ = ["EMBED", "FEATURES", "HEADS", "HIDDEN", "MetaSurrogate", "Normalisation", "TARGETS", "TOTAL_COLUMNS",
           "architecture", "features", "one_hot_tags"]
