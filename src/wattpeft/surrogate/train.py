"""Meta-training of the surrogate, leave-one-device-out.

Each step draws one training device to play "unseen" and the others (all of them, or
`devices_per_step - 1`) as seen devices:

- unseen: `rows_per_device` of its rows are predicted with the uniform tag over the other
  training devices (its own embedding is left out, as an unseen device has none); the first
  `k_shot` calibrate the predictions (calibration.fit_calibration, closed form, so the
  gradient flows through a and b) and the loss is taken on the rest after calibration.
  This is the deployment situation: an unknown device, k measurements.
- seen: `rows_per_device` rows per device, mixed up with a partner device drawn among
  the seen ones: lambda ~ Beta(mixup_alpha, mixup_alpha) per pair and step; the tag is
  lambda e_i + (1 - lambda) e_j and the log targets and features are mixed alike. The
  partner row is the partner device's row at the same configuration s when it has one
  (then the features are equal and only tags and targets mix: a device halfway between
  the two), else a random row of the partner (classic mixup of inputs and targets).
  mixup_alpha = 0 turns mixup off (lambda = 1).

Loss: the mean squared error of the standardised log metrics, per head over that head's
finite targets, summed over the heads (`masked_mse`); a NaN target (a metric the device
cannot report) is left out of its head only. The two parts are added.

Deterministic on CPU: numpy's generator and torch's initialisation are seeded by `seed`,
without touching the global torch RNG.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..devices.table import CONFIG_COLUMNS
from .calibration import fit_calibration
from .config import MetaTrainConfig, SurrogateConfigError
from .model import TARGETS, MetaSurrogate, Normalisation, features, one_hot_tags


def table_hash(table: pd.DataFrame) -> str:
    """sha256 of the rows that training reads (device, source, model, s, metrics)."""
    columns = ["device", "source", "model", *CONFIG_COLUMNS, *TARGETS]
    text = table[columns].to_csv(index=False, float_format="%.17g")
    return hashlib.sha256(text.encode()).hexdigest()


def single_model(table: pd.DataFrame) -> str:
    models = sorted(set(table["model"]))
    if len(models) != 1:
        raise ValueError(f"the table holds {len(models)} models {models}: the features carry no model "
                         "size, so train one surrogate per backbone")
    return models[0]


def log_targets(table: pd.DataFrame) -> torch.Tensor:
    """(n, 3) natural logs of the metrics; NaN where a metric is unavailable."""
    return torch.as_tensor(np.log(table[list(TARGETS)].to_numpy(dtype=np.float64)), dtype=torch.float32)


def masked_mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean squared error over its finite targets."""
    finite = torch.isfinite(targets)
    errors = torch.where(finite, predictions - targets.nan_to_num(), torch.zeros_like(predictions))
    per_head = (errors**2).sum(dim=0) / finite.sum(dim=0).clamp(min=1)
    return per_head.sum()


@dataclass
class DeviceRows:
    name: str
    x: torch.Tensor  # (n, 5) features
    y: torch.Tensor  # (n, 3) log targets
    keys: list[tuple[int, ...]]  # s of each row


def device_rows(table: pd.DataFrame, totals: Mapping[str, Any]) -> list[DeviceRows]:
    rows = []
    for name in dict.fromkeys(table["device"]):
        part = table[table["device"] == name]
        keys = [tuple(int(v) for v in s) for s in part[list(CONFIG_COLUMNS)].itertuples(index=False)]
        rows.append(DeviceRows(name, features(part, totals), log_targets(part), keys))
    return rows


def same_s_partners(rows: DeviceRows, partner: DeviceRows) -> np.ndarray:
    """For each row of `rows`, the index of the partner's row at the same s, or -1."""
    index = {key: position for position, key in enumerate(partner.keys)}
    return np.array([index.get(key, -1) for key in rows.keys], dtype=np.int64)


def unseen_tags(rows: int, n_devices: int, unseen: int) -> torch.Tensor:
    """The uniform tag over the training devices but `unseen`: in its episode the unseen
    device is left out of the tag, as a device that never was a training device is."""
    weights = torch.full((n_devices,), 1.0 / (n_devices - 1))
    weights[unseen] = 0.0
    return weights.expand(rows, n_devices)


class Episodes:
    """The training devices' rows and the draws of each step."""

    def __init__(self, data: list[DeviceRows], config: MetaTrainConfig):
        self.data, self.config = data, config
        self.rng = np.random.default_rng(config.seed)
        self.partners = {(i, j): same_s_partners(data[i], data[j]) for i in range(len(data)) for j in range(len(data))}
        self.holdable = [i for i, rows in enumerate(data) if len(rows.keys) > config.k_shot]
        if len(data) < 2 or not self.holdable:
            raise ValueError(f"leave-one-device-out needs >= 2 devices and one with > k_shot = {config.k_shot} "
                             f"rows; got {[(rows.name, len(rows.keys)) for rows in data]}")

    def draw_devices(self) -> tuple[int, list[int]]:
        unseen = int(self.rng.choice(self.holdable))
        seen = [i for i in self.rng.permutation(len(self.data)) if i != unseen]
        limit = self.config.devices_per_step - 1 if self.config.devices_per_step else len(seen)
        return unseen, [int(i) for i in seen[:limit]]

    def draw_rows(self, device: int) -> np.ndarray:
        count = len(self.data[device].keys)
        return self.rng.permutation(count)[: self.config.rows_per_device]

    def unseen_loss(self, model: MetaSurrogate, device: int) -> torch.Tensor:
        rows, picked, k = self.data[device], self.draw_rows(device), self.config.k_shot
        logs = model(rows.x[picked], unseen_tags(len(picked), len(self.data), device))
        calibration = fit_calibration(logs[:k], rows.y[picked[:k]])
        return masked_mse(calibration.apply(logs[k:]) / model.target_std, rows.y[picked[k:]] / model.target_std)

    def draw_partner(self, device: int, devices: list[int]) -> int:
        others = [other for other in devices if other != device] or [device]
        return int(self.rng.choice(others))

    def mixed_batch(self, device: int, partner: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, tags, log targets) of `device`'s rows mixed with `partner`'s."""
        own, other = self.data[device], self.data[partner]
        picked = self.draw_rows(device)
        matched = self.partners[(device, partner)][picked]
        random_rows = self.rng.integers(0, len(other.keys), size=len(picked))
        matched = np.where(matched >= 0, matched, random_rows)
        lam = float(self.rng.beta(self.config.mixup_alpha, self.config.mixup_alpha)) if self.config.mixup_alpha else 1.0
        tags = one_hot_tags([device] * len(picked), len(self.data)) * lam
        tags = tags + one_hot_tags([partner] * len(picked), len(self.data)) * (1 - lam)
        x = lam * own.x[picked] + (1 - lam) * other.x[matched]
        y = lam * own.y[picked] + (1 - lam) * other.y[matched]
        return x, tags, y

    def seen_loss(self, model: MetaSurrogate, devices: list[int]) -> torch.Tensor:
        batches = [self.mixed_batch(device, self.draw_partner(device, devices)) for device in devices]
        x, tags, y = (torch.cat(parts) for parts in zip(*batches))
        return masked_mse(model(x, tags) / model.target_std, y / model.target_std)

    def loss(self, model: MetaSurrogate) -> torch.Tensor:
        unseen, seen = self.draw_devices()
        return self.unseen_loss(model, unseen) + self.seen_loss(model, seen)


def initial_surrogate(data: list[DeviceRows], totals: Mapping[str, Any], model_name: str,
                      config: MetaTrainConfig) -> MetaSurrogate:
    """A freshly initialised surrogate (seeded), standardised on the training rows."""
    normalisation = Normalisation.fitted(torch.cat([rows.x for rows in data]), torch.cat([rows.y for rows in data]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return MetaSurrogate([rows.name for rows in data], totals, model_name, config.hidden, config.embed,
                             normalisation)


def train_surrogate(table: pd.DataFrame, totals: Mapping[str, Any],
                    config: MetaTrainConfig | Mapping[str, Any] | None = None) -> MetaSurrogate:
    """Meta-train a surrogate on every device of a (validated) device table of one backbone.
    `totals`: {**ModelShape.totals(), "kept_ranks": max_rank}. Returns it in eval mode."""
    config = config if isinstance(config, MetaTrainConfig) else MetaTrainConfig.from_mapping(config)
    model_name = single_model(table)
    data = device_rows(table, totals)
    episodes = Episodes(data, config)
    model = initial_surrogate(data, totals, model_name, config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    bar = tqdm(range(config.steps), desc="meta-surrogate", disable=not config.progress, leave=False)
    for _ in bar:
        loss = episodes.loss(model)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    model.provenance = {"training": config.as_dict(), "table_hash": table_hash(table)}
    return model.eval()


__all__ = ["MetaTrainConfig", "SurrogateConfigError", "masked_mse", "table_hash", "train_surrogate"]
