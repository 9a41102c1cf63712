"""Leave-one-device-out evaluation of the meta-surrogate against per-device baselines.

For each held-out device d of a table (`evaluate`):

1. Split d's rows, seeded by (seed, crc32 of d's name): shuffle them, take the first
   `test_rows` as the test set, then from the rest the first `k_shot` (5) and the first
   `baseline_rows` (200) as fit sets; the 5 are the first 5 of the 200, and no fit row is
   ever a test row.
2. `meta_surrogate_5shot`: meta-train on every other device (train.train_surrogate), predict
   d with the uniform tag, calibrate on the 5 rows (calibration.fit_calibration).
3. `regression_5`, `regression_200`: a ridge regression per metric on the same features,
   in log space (features standardised on the fit rows, intercept unpenalised, penalty
   `ridge`), fitted on d's 5 and 200 rows only.
4. Score each predictor on the test rows, per target (energy_j, latency_ms, peak_power_w):
   `mape_pct` (mean |pred - true| / true, in %), `within_10pct` (share, 0 to 1, of test
   rows with |pred / true - 1| <= 0.1), `spearman` (rank correlation; NaN where either
   side is constant).

A row that cannot be scored says why in `unavailable` (empty when scored; its metrics
NaN): nothing is ever scored on fewer rows than the protocol names. A device with fewer
than test_rows + baseline_rows rows has no regression_200 (fewer than test_rows + k_shot:
no predictor at all). A target's NaN rows (unmeasured) are left out of its test and fit
rows; a predictor whose fit rows then fall short of its count, or a target with no test
row left, is unavailable. `n_test` and `n_fit` count the rows actually used.
`device_source` is the held-out device's source: a surrogate that is scored on a simulated
device and trained on simulated ones may only have learnt the simulator back.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..devices.table import UNAVAILABLE
from .calibration import fit_calibration
from .model import TARGETS, features
from .train import MetaTrainConfig, log_targets, train_surrogate

RESULT_COLUMNS = ("held_out_device", "device_source", "predictor", "target", "mape_pct", "within_10pct",
                  "spearman", "n_test", "n_fit", UNAVAILABLE)


@dataclass(frozen=True)
class EvalProtocol:
    test_rows: int = 100
    k_shot: int = 5
    baseline_rows: int = 200
    ridge: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.test_rows >= 2 and 1 <= self.k_shot <= self.baseline_rows and self.ridge > 0):
            raise ValueError(f"evaluation protocol needs test_rows >= 2, 1 <= k_shot <= baseline_rows and "
                             f"ridge > 0, got {self}")

    def predictors(self) -> dict[str, int]:
        """Predictor name -> rows of the held-out device it is fitted on."""
        return {f"meta_surrogate_{self.k_shot}shot": self.k_shot, f"regression_{self.k_shot}": self.k_shot,
                f"regression_{self.baseline_rows}": self.baseline_rows}


@dataclass(frozen=True)
class Split:
    test: np.ndarray
    fit: dict[int, np.ndarray]  # rows per fit size; a size the device cannot supply is absent


def split_rows(count: int, device: str, protocol: EvalProtocol) -> Split:
    order = np.random.default_rng([protocol.seed, zlib.crc32(device.encode())]).permutation(count)
    rest = order[protocol.test_rows:]
    sizes = (protocol.k_shot, protocol.baseline_rows)
    return Split(order[: protocol.test_rows], {size: rest[:size] for size in sizes if len(rest) >= size})


def ridge_predictions(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge regression of log targets on standardised features; natural-unit predictions."""
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    design, test = (x_fit - mean) / std, (x_test - mean) / std
    weights = np.linalg.solve(design.T @ design + penalty * np.eye(design.shape[1]), design.T @ (y_fit - y_fit.mean()))
    return np.exp(test @ weights + y_fit.mean())


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    relative = np.abs(predicted - truth) / truth
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        spearman = float(stats.spearmanr(predicted, truth).statistic)
    return {"mape_pct": float(100 * relative.mean()), "within_10pct": float((relative <= 0.1).mean()),
            "spearman": spearman}


class HeldOutDevice:
    """One held-out device's rows, split, and the score rows of each predictor."""

    def __init__(self, table: pd.DataFrame, device: str, totals: Mapping[str, Any], protocol: EvalProtocol):
        self.part = table[table["device"] == device].reset_index(drop=True)
        self.device, self.protocol = device, protocol
        self.x = features(self.part, totals)
        self.y = log_targets(self.part).double().numpy()
        self.split = split_rows(len(self.part), device, protocol)
        self.source = "+".join(sorted(set(self.part["source"])))

    def row(self, predictor: str, target: str, **values: Any) -> dict[str, Any]:
        empty = {"mape_pct": np.nan, "within_10pct": np.nan, "spearman": np.nan, "n_test": 0, "n_fit": 0,
                 UNAVAILABLE: ""}
        return {"held_out_device": self.device, "device_source": self.source, "predictor": predictor,
                "target": target, **empty, **values}

    def fit_rows(self, size: int) -> np.ndarray | None:
        """The `size` fit rows, or None when the device cannot supply them and a full test set."""
        return None if len(self.split.test) < self.protocol.test_rows else self.split.fit.get(size)

    def why_missing(self, column: int, size: int) -> str | None:
        """Why `column` cannot be scored with `size` fit rows, or None."""
        rows, test_rows = self.fit_rows(size), self.protocol.test_rows
        if rows is None:
            return f"{len(self.part)} rows; {test_rows} test rows and {size} fit rows need {test_rows + size}"
        finite_fit = int(np.isfinite(self.y[rows, column]).sum())
        finite_test = int(np.isfinite(self.y[self.split.test, column]).sum())
        if finite_test == 0 or finite_fit < size:
            return (f"{TARGETS[column]} measured on {finite_fit} of {size} fit rows and {finite_test} of "
                    f"{test_rows} test rows ({self.reason(column)})")
        return None

    def reason(self, column: int) -> str:
        if UNAVAILABLE not in self.part.columns:
            return "no reason given"
        missing = self.part[UNAVAILABLE][~np.isfinite(self.y[:, column])].dropna()
        return "; ".join(sorted(set(missing.astype(str)))) or "no reason given"

    def scored(self, predictor: str, size: int, predictions: np.ndarray | None) -> list[dict[str, Any]]:
        """A row per target for predictions (n_rows, 3) of every row of the device."""
        out = []
        for column, target in enumerate(TARGETS):
            why = self.why_missing(column, size)
            if why:  # predictions are None only where the fit rows are missing, which why_missing names
                out.append(self.row(predictor, target, **{UNAVAILABLE: why}))
                continue
            test = self.split.test[np.isfinite(self.y[self.split.test, column])]
            values = scores(predictions[test, column], np.exp(self.y[test, column]))
            out.append(self.row(predictor, target, **values, n_test=len(test), n_fit=size))
        return out

    def regression(self, size: int) -> np.ndarray | None:
        rows = self.fit_rows(size)
        if rows is None:
            return None
        x, columns = self.x.double().numpy(), []
        for column in range(len(TARGETS)):
            finite = rows[np.isfinite(self.y[rows, column])]
            columns.append(ridge_predictions(x[finite], self.y[finite, column], x, self.protocol.ridge)
                           if len(finite) else np.full(len(x), np.nan))
        return np.stack(columns, axis=1)

    def surrogate(self, table: pd.DataFrame, totals: Mapping[str, Any], config: MetaTrainConfig) -> np.ndarray | None:
        shots = self.fit_rows(self.protocol.k_shot)
        if shots is None:
            return None
        model = train_surrogate(table[table["device"] != self.device], totals, config)
        with torch.no_grad():
            logs = model(self.x, model.tag(None, len(self.x)))
            calibration = fit_calibration(logs[shots], torch.as_tensor(self.y[shots], dtype=logs.dtype))
            return torch.exp(calibration.apply(logs)).double().numpy()


def evaluate(table: pd.DataFrame, totals: Mapping[str, Any], config: MetaTrainConfig | Mapping[str, Any] | None = None,
             protocol: EvalProtocol | None = None, devices: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (held-out device, predictor, target), columns `RESULT_COLUMNS`."""
    config = config if isinstance(config, MetaTrainConfig) else MetaTrainConfig.from_mapping(config)
    protocol = protocol or EvalProtocol(k_shot=config.k_shot)
    if protocol.k_shot != config.k_shot:
        raise ValueError(f"the protocol's k_shot {protocol.k_shot} differs from training's {config.k_shot}")
    names = list(dict.fromkeys(table["device"]))
    held_out = list(devices) if devices is not None else names
    unknown = sorted(set(held_out) - set(names))
    if unknown or len(names) < 3:
        raise ValueError(f"held-out devices {unknown} are not in the table, or the table has fewer than 3 "
                         f"devices ({names}): leave-one-out training needs 2 others")
    rows = []
    for device in held_out:
        rows += device_scores(table, device, totals, config, protocol)
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def device_scores(table: pd.DataFrame, device: str, totals: Mapping[str, Any], config: MetaTrainConfig,
                  protocol: EvalProtocol) -> list[dict[str, Any]]:
    held = HeldOutDevice(table, device, totals, protocol)
    (surrogate_name, k), (few_name, _), (many_name, many) = protocol.predictors().items()
    return (held.scored(surrogate_name, k, held.surrogate(table, totals, config))
            + held.scored(few_name, k, held.regression(k))
            + held.scored(many_name, many, held.regression(many)))


__all__ = ["EvalProtocol", "RESULT_COLUMNS", "evaluate", "ridge_predictions", "split_rows"]
