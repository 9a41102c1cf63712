"""The meta-surrogate: features, calibration, masked losses, meta-training, the store and the
leave-one-device-out evaluation, on small simulated tables (modelled, not measured)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from wattpeft.devices.grid import configuration_grid
from wattpeft.devices.roofline import SIMULATED_DEVICES, ModelShape, simulate
from wattpeft.surrogate.calibration import fit_calibration
from wattpeft.surrogate.evaluate import RESULT_COLUMNS, EvalProtocol, evaluate
from wattpeft.surrogate.model import FEATURES, MetaSurrogate, features
from wattpeft.surrogate.store import METADATA, WEIGHTS, SurrogateStoreError, load_surrogate, save_surrogate
from wattpeft.surrogate.train import (
    MetaTrainConfig,
    SurrogateConfigError,
    log_targets,
    masked_mse,
    train_surrogate,
)

SHAPE = ModelShape.from_hf_config({
    "model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152}, name="SmolLM2-135M")
TOTALS = {**SHAPE.totals(), "kept_ranks": 16}
GRID = configuration_grid(SHAPE, {"seq_len": [32, 64, 128, 256, 512], "kept_layers": [0.25, 0.5, 0.75, "all"],
                                  "kept_heads": [3, 6, "all"], "kept_ranks": [0, 4, 8, 16],
                                  "param_bits": [4, 8, 16, 32]})
TRAINING = ("RTX-A6000", "Jetson-Orin-NX", "iPhone-15-NPU")
HELD_OUT = "Pixel-8-TPU"
QUICK = {"steps": 300, "progress": False}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.concat([simulate(SIMULATED_DEVICES[name], SHAPE, GRID, seed=0) for name in (*TRAINING, HELD_OUT)],
                     ignore_index=True)


@pytest.fixture(scope="module")
def trained(table) -> MetaSurrogate:
    return train_surrogate(table[table["device"] != HELD_OUT], TOTALS, QUICK)


def five_shot_mape(model: MetaSurrogate, rows: pd.DataFrame) -> float:
    """Mean MAPE (%) over the three metrics on `rows` after calibrating on 5 of them."""
    x, y = features(rows, TOTALS), log_targets(rows)
    order = np.random.default_rng(1).permutation(len(rows))
    shots, test = order[:5], order[5:]
    with torch.no_grad():
        logs = model(x, model.tag(None, len(rows)))
        calibrated = fit_calibration(logs[shots], y[shots]).apply(logs)
    relative = (torch.exp(calibrated[test]) - torch.exp(y[test])).abs() / torch.exp(y[test])
    return float(100 * relative.mean())


# --- features and calibration -------------------------------------------------------------------

def test_features_are_the_documented_shares():
    row = {"seq_len": 64, "kept_layers": 15, "kept_heads": 3, "kept_ranks": 4, "param_bits": 8}
    assert FEATURES == ("log_seq_len", "layer_share", "head_share", "rank_share", "bits_share")
    assert features(row, TOTALS)[0].tolist() == pytest.approx([math.log(64), 0.5, 1 / 3, 0.25, 0.5])
    with pytest.raises(ValueError, match="kept_ranks"):
        features(row, SHAPE.totals())


def test_calibration_recovers_a_known_line_from_five_points():
    predictions = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = torch.tensor([0.5, 2.0, -1.5], dtype=torch.float64), torch.tensor([1.0, -3.0, 0.25], dtype=torch.float64)
    calibration = fit_calibration(predictions, predictions * a + b)
    assert torch.allclose(calibration.a, a, atol=1e-12) and torch.allclose(calibration.b, b, atol=1e-12)
    assert calibration.points == (5, 5, 5)


def test_calibration_is_differentiable():
    gen = torch.Generator().manual_seed(1)
    predictions = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    measured = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def corrected(x, y):
        fitted = fit_calibration(x, y)
        return fitted.apply(x * 0.5 + 1.0), fitted.a, fitted.b

    assert torch.autograd.gradcheck(corrected, (predictions, measured))


def test_calibration_guards_equal_predictions_and_missing_measurements():
    predictions = torch.full((5, 3), 2.0)
    measured = torch.tensor([[1.0, 1.0, math.nan]] * 4 + [[3.0, 2.0, math.nan]])
    measured[0, 1] = math.nan
    calibration = fit_calibration(predictions, measured)
    assert calibration.a.tolist() == [1.0, 1.0, 1.0]  # no slope from equal predictions: offset only
    assert calibration.b.tolist() == pytest.approx([1.4 - 2.0, 1.25 - 2.0, 0.0])  # no point: identity
    assert calibration.points == (5, 4, 0)


# --- gradients and masked targets ----------------------------------------------------------------

def test_predictions_are_differentiable_in_float_kept_counts():
    torch.manual_seed(0)
    model = MetaSurrogate(TRAINING, TOTALS)
    kept = {name: torch.tensor([value], requires_grad=True)
            for name, value in {"kept_layers": 20.5, "kept_heads": 6.3, "kept_ranks": 7.2}.items()}
    x = model.features({"seq_len": 128, "param_bits": 16, **kept})
    energy, latency, power = model.predict(x, model.tag(None, 1))
    (energy + latency + power).sum().backward()
    for name, value in kept.items():
        assert value.grad is not None and torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0, name


def test_masked_targets_give_finite_losses_and_leave_other_heads_alone():
    predictions = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    complete = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
    partial = complete.clone()
    partial[[0, 2, 5], 0] = math.nan  # energy unavailable on three rows
    gradients = []
    for targets in (complete, partial):
        loss = masked_mse(predictions, targets)
        (gradient,) = torch.autograd.grad(loss, predictions)
        assert torch.isfinite(loss) and torch.isfinite(gradient).all()
        gradients.append(gradient)
    assert torch.equal(gradients[0][:, 1:], gradients[1][:, 1:])  # latency and power unchanged
    assert gradients[1][[0, 2, 5], 0].abs().sum() == 0
    all_missing = complete.clone()
    all_missing[:, 0] = math.nan
    expected = ((predictions - complete)[:, 1:] ** 2).mean(0).sum()
    assert torch.allclose(masked_mse(predictions, all_missing), expected)


# --- config, training, store ----------------------------------------------------------------------

def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(SurrogateConfigError, match=r"meta_surrogate\.stpes: unknown key.*known: steps"):
        MetaTrainConfig.from_mapping({"stpes": 10})
    with pytest.raises(SurrogateConfigError, match="rows_per_device must be > k_shot"):
        MetaTrainConfig.from_mapping({"rows_per_device": 5})
    with pytest.raises(SurrogateConfigError, match="steps: expected int"):
        MetaTrainConfig.from_mapping({"steps": 1.5})
    assert MetaTrainConfig.from_mapping({"lr": 1}).lr == 1.0


def test_meta_training_is_seeded(table):
    part = table[table["device"] != HELD_OUT]
    first, second = (train_surrogate(part, TOTALS, {"steps": 20, "progress": False}) for _ in range(2))
    for (name, one), (_, other) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(one, other), name


def test_meta_training_beats_an_untrained_model_on_a_held_out_device(table, trained):
    untrained = train_surrogate(table[table["device"] != HELD_OUT], TOTALS, {**QUICK, "steps": 0})
    held_out = table[table["device"] == HELD_OUT].reset_index(drop=True)
    trained_mape, untrained_mape = five_shot_mape(trained, held_out), five_shot_mape(untrained, held_out)
    assert trained_mape < untrained_mape, (trained_mape, untrained_mape)


def test_store_round_trip_is_exact_and_holds_no_pickle(tmp_path, table, trained):
    held_out = table[table["device"] == HELD_OUT].reset_index(drop=True)
    x = features(held_out, TOTALS)
    with torch.no_grad():
        calibration = fit_calibration(trained(x[:5], trained.tag(None, 5)), log_targets(held_out)[:5])
        before = trained.predict(x, trained.tag(None, len(x)), calibration)
    save_surrogate(tmp_path / "store" / METADATA, trained, calibration, HELD_OUT)  # the folder or its JSON
    loaded, loaded_calibration = load_surrogate(tmp_path / "store")
    with torch.no_grad():
        after = loaded.predict(x, loaded.tag(None, len(x)), loaded_calibration)
    assert all(torch.equal(one, other) for one, other in zip(before, after))
    assert loaded.devices == trained.devices and loaded.provenance == trained.provenance
    assert sorted(path.name for path in (tmp_path / "store").iterdir()) == sorted([WEIGHTS, METADATA])
    raw = (tmp_path / "store" / WEIGHTS).read_bytes()
    header = json.loads(raw[8: 8 + int.from_bytes(raw[:8], "little")])  # safetensors: length, JSON header
    assert set(header) - {"__metadata__"} == set(trained.state_dict())
    assert not raw.startswith(b"\x80")  # a pickle starts with its protocol opcode
    stored = json.loads((tmp_path / "store" / METADATA).read_text())
    assert stored["calibration"]["device"] == HELD_OUT and len(stored["table_hash"]) == 64
    assert load_surrogate(tmp_path / "store" / METADATA)[0].devices == trained.devices


def test_loading_weights_of_another_save_fails_clearly(tmp_path, table, trained):
    save_surrogate(tmp_path / "one", trained)
    other = train_surrogate(table[table["device"] != HELD_OUT], TOTALS, {"steps": 1, "progress": False})
    save_surrogate(tmp_path / "two", other)
    (tmp_path / "one" / WEIGHTS).write_bytes((tmp_path / "two" / WEIGHTS).read_bytes())
    with pytest.raises(SurrogateStoreError, match="is not the file surrogate.json was written with"):
        load_surrogate(tmp_path / "one")


@pytest.mark.parametrize("change, message", [
    (lambda data: data["architecture"].update(hidden=32), "weights do not match the stored architecture"),
    (lambda data: data["architecture"].update(features=["seq_len"]), "architecture does not match this code"),
    (lambda data: data.update(version=99), "version 99"),
])
def test_loading_a_changed_store_fails_clearly(tmp_path, trained, change, message):
    save_surrogate(tmp_path / "store", trained)
    path = tmp_path / "store" / METADATA
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(SurrogateStoreError, match=message):
        load_surrogate(tmp_path / "store")


# --- evaluation -------------------------------------------------------------------------------------

def test_evaluate_reports_every_predictor_and_target_and_what_is_unavailable(table):
    few_rows = table[table["device"] == "iPhone-15-NPU"].iloc[:150]
    no_energy = table[table["device"] == HELD_OUT].assign(energy_j=math.nan, unavailable="no energy counter")
    small = pd.concat([table[table["device"].isin(TRAINING[:2])], few_rows, no_energy], ignore_index=True)
    result = evaluate(small, TOTALS, {"steps": 100, "progress": False}, EvalProtocol(test_rows=100),
                      devices=["iPhone-15-NPU", HELD_OUT])
    assert list(result.columns) == list(RESULT_COLUMNS)
    assert set(result["device_source"]) == {"simulated"}
    keys = set(zip(result["held_out_device"], result["predictor"], result["target"]))
    assert len(keys) == len(result) == 2 * 3 * 3
    by_key = result.set_index(["held_out_device", "predictor", "target"]).sort_index()
    too_few = by_key.loc[("iPhone-15-NPU", "regression_200")]
    assert too_few["mape_pct"].isna().all() and too_few["unavailable"].str.contains("150 rows").all()
    scored = by_key.loc[("iPhone-15-NPU", "meta_surrogate_5shot", "latency_ms")]
    assert (scored["n_test"], scored["n_fit"]) == (100, 5) and scored["unavailable"] == ""
    assert 0 <= scored["within_10pct"] <= 1 and -1 <= scored["spearman"] <= 1 and scored["mape_pct"] > 0
    energy = by_key.xs("energy_j", level="target").loc[HELD_OUT]
    assert energy["mape_pct"].isna().all() and energy["unavailable"].str.contains("no energy counter").all()
    assert by_key.loc[(HELD_OUT, "regression_200", "latency_ms"), "n_fit"] == 200
