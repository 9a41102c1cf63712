"""Device profile tables: the schema and its errors, the imported CSV, the roofline model of
the simulated devices (bounds, monotonicity, seeded noise) and the configuration grid."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from wattpeft.devices.grid import GridError, configuration_grid
from wattpeft.devices.roofline import (
    NOISE_SIGMAS,
    SIMULATED_DEVICES,
    DeviceSpec,
    ModelShape,
    bound,
    predict,
    simulate,
)
from wattpeft.devices.table import (
    COLUMNS,
    DeviceTableError,
    read_imported_csv,
    read_table,
    validate_table,
    write_table,
)

SMOLLM2_CONFIG = {
    "model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152,
}
BERT_CONFIG = {
    "model_type": "bert", "num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768,
    "intermediate_size": 3072, "vocab_size": 30522,
}
SHAPE = ModelShape.from_hf_config(SMOLLM2_CONFIG, name="SmolLM2-135M")
FULL = {"seq_len": 256, "kept_layers": 30, "kept_heads": 9, "kept_ranks": 8, "param_bits": 16}
GOOD_CSV = """device,model,seq_len,kept_layers,kept_heads,kept_ranks,param_bits,energy_j,latency_ms,peak_power_w,provenance
jetson-orin-nx,SmolLM2-135M,64,30,9,8,16,0.41,21.5,14.2,"Orin NX 16GB, JetPack 6.0, 2025-01-10, python bench.py"
jetson-orin-nx,SmolLM2-135M,256,15,9,4,8,0.52,30.1,15.0,"Orin NX 16GB, JetPack 6.0, 2025-01-10, python bench.py"
"""


def with_s(**changes) -> dict:
    return {**FULL, **changes}


# --- model shapes -----------------------------------------------------------------------------

def test_model_shape_from_a_llama_style_config():
    assert (SHAPE.layers, SHAPE.heads, SHAPE.kv_heads, SHAPE.hidden) == (30, 9, 3, 576)
    assert (SHAPE.intermediate, SHAPE.vocab, SHAPE.head_dim, SHAPE.gated_mlp) == (1536, 49152, 64, True)
    assert [name for name, _, _ in SHAPE.lora_modules] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert dict((n, (i, o)) for n, i, o in SHAPE.lora_modules)["k_proj"] == (576, 192)  # 3 kv heads x 64
    assert SHAPE.totals() == {"kept_layers": 30, "kept_heads": 9}


def test_model_shape_from_a_bert_style_config():
    shape = ModelShape.from_hf_config(BERT_CONFIG, name="roberta-base")
    assert (shape.layers, shape.heads, shape.kv_heads, shape.head_dim, shape.gated_mlp) == (12, 12, 12, 64, False)
    assert [(n, i, o) for n, i, o in shape.lora_modules] == [
        ("query", 768, 768), ("key", 768, 768), ("value", 768, 768),
        ("dense", 768, 768), ("dense", 768, 3072), ("dense", 3072, 768)]
    only_qv = ModelShape.from_hf_config(BERT_CONFIG, lora_targets=["query", "value"])
    assert [n for n, _, _ in only_qv.lora_modules] == ["query", "value"]


def test_model_shape_errors_name_the_key_or_target():
    with pytest.raises(ValueError, match="hidden_size"):
        ModelShape.from_hf_config({k: v for k, v in SMOLLM2_CONFIG.items() if k != "hidden_size"})
    with pytest.raises(ValueError, match="q_proj"):
        ModelShape.from_hf_config(BERT_CONFIG, lora_targets=["q_proj"])


# --- the roofline -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["RTX-A6000", "Jetson-Orin-NX", "iPhone-15-NPU", "Pixel-8-TPU"])
def test_accelerators_are_memory_bound_short_and_compute_bound_long(device):
    spec = SIMULATED_DEVICES[device]
    for bits in (4, 8, 16):
        assert bound(spec, SHAPE, with_s(seq_len=16, param_bits=bits)) == "memory"
        assert bound(spec, SHAPE, with_s(seq_len=4096, param_bits=bits)) == "compute"


def test_a_cpu_is_compute_bound_even_for_short_sequences():
    spec = SIMULATED_DEVICES["Raspberry-Pi-4"]
    for seq_len, bits in itertools.product((16, 64, 4096), (4, 8, 16, 32)):
        assert bound(spec, SHAPE, with_s(seq_len=seq_len, param_bits=bits)) == "compute"


MONOTONE_FIELDS = {"kept_layers": (30, 20, 8, 1), "kept_heads": (9, 6, 3, 1), "kept_ranks": (16, 8, 4, 0),
                   "param_bits": (32, 16, 8, 4)}


@pytest.mark.parametrize("device", sorted(SIMULATED_DEVICES))
def test_keeping_less_never_costs_more_latency_or_energy(device):
    """Noise-free: fewer layers, heads, ranks or bits never raise latency or energy."""
    spec = SIMULATED_DEVICES[device]
    for seq_len, (field, values) in itertools.product((16, 256, 2048), MONOTONE_FIELDS.items()):
        costs = [predict(spec, SHAPE, with_s(seq_len=seq_len, **{field: v})) for v in values]
        for more, less in zip(costs, costs[1:]):
            assert less["latency_ms"] <= more["latency_ms"] * (1 + 1e-12), (field, seq_len)
            assert less["energy_j"] <= more["energy_j"] * (1 + 1e-12), (field, seq_len)


def test_predictions_are_physical():
    for spec in SIMULATED_DEVICES.values():
        metrics = predict(spec, SHAPE, FULL)
        assert spec.idle_w < metrics["peak_power_w"] <= spec.peak_w
        mean_power = metrics["energy_j"] / (metrics["latency_ms"] / 1e3)
        assert spec.idle_w < mean_power <= metrics["peak_power_w"] * (1 + 1e-12)


def test_device_figures_cover_every_precision_with_references():
    assert sorted(SIMULATED_DEVICES) == sorted(
        ["RTX-A6000", "Jetson-Orin-NX", "MacBook-M2", "iPhone-15-NPU", "Pixel-8-TPU", "Raspberry-Pi-4"])
    for spec in SIMULATED_DEVICES.values():
        assert sorted(spec.peak_flops) == [4, 8, 16, 32] and spec.references
    assert SIMULATED_DEVICES["RTX-A6000"].peak_flops[16] == pytest.approx(154.8e12)


def test_device_spec_refuses_faster_wide_than_narrow_arithmetic():
    with pytest.raises(ValueError, match="never grow"):
        DeviceSpec("odd", {4: 1e12, 8: 1e12, 16: 2e12, 32: 1e12}, 1e11, 1.0, 10.0, ("test",))


# --- simulated tables: labels and seeded noise -------------------------------------------------

def big_grid() -> list[dict]:
    return configuration_grid(SHAPE, {
        "seq_len": [16, 32, 64, 128, 256, 512, 1024, 2048], "kept_layers": [1, 4, 8, 15, 22, "all"],
        "kept_heads": [1, 3, 6, "all"], "kept_ranks": [0, 4, 8], "param_bits": [4, 8, 16, 32]})


def test_every_simulated_row_is_labelled_simulated():
    for spec in SIMULATED_DEVICES.values():
        table = simulate(spec, SHAPE, configuration_grid(SHAPE, small_cfg()), seed=0)
        assert list(table.columns) == list(COLUMNS)
        assert (table["source"] == "simulated").all()
        assert table["provenance"].str.startswith("SIMULATED, not measured").all()
        assert (table["device"] == spec.name).all() and (table["model"] == "SmolLM2-135M").all()


def test_same_seed_same_table_another_seed_another_draw():
    spec, grid = SIMULATED_DEVICES["Jetson-Orin-NX"], configuration_grid(SHAPE, small_cfg())
    first, again, other = (simulate(spec, SHAPE, grid, seed=s) for s in (7, 7, 8))
    pd.testing.assert_frame_equal(first, again)
    for metric in NOISE_SIGMAS:
        assert not np.allclose(first[metric], other[metric])


def test_noise_is_log_normal_with_the_documented_sigmas():
    spec, grid = SIMULATED_DEVICES["RTX-A6000"], big_grid()
    clean = simulate(spec, SHAPE, grid, seed=0, noise=None)
    for seed in (1, 2):
        noisy = simulate(spec, SHAPE, grid, seed=seed)
        for metric, sigma in NOISE_SIGMAS.items():
            log_ratio = np.log(noisy[metric] / clean[metric])
            assert len(log_ratio) > 2000
            assert log_ratio.std() == pytest.approx(sigma, rel=0.1), metric
            assert abs(log_ratio.mean()) < 4 * sigma / np.sqrt(len(log_ratio)), metric


def test_one_devices_draws_do_not_depend_on_the_others():
    grid = configuration_grid(SHAPE, small_cfg())
    pi = SIMULATED_DEVICES["Raspberry-Pi-4"]
    alone = simulate(pi, SHAPE, grid, seed=3)
    together = pd.concat([simulate(spec, SHAPE, grid, seed=3) for spec in SIMULATED_DEVICES.values()])
    pd.testing.assert_frame_equal(together[together["device"] == pi.name].reset_index(drop=True), alone)


# --- the table: validation, imported CSVs, parquet --------------------------------------------

def write_csv(tmp_path, text, name="orin.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_imported_csv_is_read_as_imported(tmp_path):
    table = read_imported_csv(write_csv(tmp_path, GOOD_CSV))
    assert (table["source"] == "imported").all() and len(table) == 2
    assert table["seq_len"].dtype == "int64" and table["latency_ms"].dtype == "float64"
    assert table["latency_ms"].tolist() == [21.5, 30.1]


def test_the_device_argument_fills_the_device_column(tmp_path):
    text = GOOD_CSV.replace("device,", "", 1).replace("jetson-orin-nx,", "")
    table = read_imported_csv(write_csv(tmp_path, text), device="orin-nx-lab")
    assert (table["device"] == "orin-nx-lab").all()
    with pytest.raises(DeviceTableError, match=r"row 1 \(line 2\), column device"):
        read_imported_csv(write_csv(tmp_path, GOOD_CSV), device="orin-nx-lab")


def change_cell(column: str, row: int, value: str) -> str:
    """GOOD_CSV with data row `row` (1-based) of `column` set to `value`."""
    frame = pd.read_csv(pd.io.common.StringIO(GOOD_CSV), dtype=str)
    frame.loc[row - 1, column] = value
    return frame.to_csv(index=False)


BAD_CSVS = {
    "missing column": (pd.read_csv(pd.io.common.StringIO(GOOD_CSV), dtype=str).drop(columns="peak_power_w")
                       .to_csv(index=False), "column peak_power_w: missing"),
    "string in latency_ms": (change_cell("latency_ms", 2, "fast"),
                             r"row 2 \(line 3\), column latency_ms: 'fast' is not a number"),
    "negative energy": (change_cell("energy_j", 1, "-0.3"),
                        r"row 1 \(line 2\), column energy_j: '-0.3' is not a positive finite number"),
    "unknown param_bits": (change_cell("param_bits", 2, "12"),
                           r"row 2 \(line 3\), column param_bits: 12 bits is not one of 4, 8, 16, 32"),
    "fractional seq_len": (change_cell("seq_len", 1, "64.5"), r"row 1 \(line 2\), column seq_len: '64.5' is not an"),
    "claims simulated": (GOOD_CSV.replace("device,", "source,device,", 1).replace("\njetson", "\nsimulated,jetson"),
                         r"row 1 \(line 2\), column source: 'simulated' in an imported CSV"),
    "missing metric, no reason": (change_cell("energy_j", 2, ""),
                                  r"row 2 \(line 3\), column energy_j: empty: give the reason"),
    "empty provenance": (change_cell("provenance", 1, ""), r"row 1 \(line 2\), column provenance: empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_a_bad_imported_csv_names_the_file_row_and_column(tmp_path, case):
    text, message = BAD_CSVS[case]
    path = write_csv(tmp_path, text)
    with pytest.raises(DeviceTableError, match=message) as error:
        read_imported_csv(path)
    assert str(path) in str(error.value)


def test_every_problem_is_reported_at_once(tmp_path):
    text = change_cell("latency_ms", 1, "fast").replace("0.52", "-1")
    with pytest.raises(DeviceTableError) as error:
        read_imported_csv(write_csv(tmp_path, text))
    assert len(error.value.problems) == 2


def test_an_unavailable_metric_needs_a_reason(tmp_path):
    frame = pd.read_csv(pd.io.common.StringIO(change_cell("energy_j", 2, "")), dtype=str)
    frame["unavailable"] = ["", "no energy counter on this board"]
    table = read_imported_csv(write_csv(tmp_path, frame.to_csv(index=False)))
    assert np.isnan(table["energy_j"].iloc[1])


def test_kept_counts_above_the_models_totals_are_refused(tmp_path):
    text = change_cell("kept_heads", 2, "12")
    with pytest.raises(DeviceTableError, match=r"row 2 \(line 3\), column kept_heads: 12 is above SmolLM2-135M's"):
        read_imported_csv(write_csv(tmp_path, text), totals={"SmolLM2-135M": SHAPE.totals()})


def test_write_table_round_trips_and_never_leaves_a_bad_file(tmp_path):
    path = tmp_path / "profiles" / "devices.parquet"
    table = simulate(SIMULATED_DEVICES["MacBook-M2"], SHAPE, configuration_grid(SHAPE, small_cfg()), seed=0)
    write_table(table, path)
    pd.testing.assert_frame_equal(read_table(path), table)
    broken = table.assign(source="guessed")
    with pytest.raises(DeviceTableError, match="column source: 'guessed' is not a source"):
        write_table(broken, path)
    pd.testing.assert_frame_equal(read_table(path), table)
    assert sorted(p.name for p in path.parent.iterdir()) == ["devices.parquet"]


def test_validate_table_names_the_table_it_was_given():
    with pytest.raises(DeviceTableError, match=r"(?s)results/x.parquet: .*the table has no rows"):
        validate_table(pd.DataFrame(columns=list(COLUMNS)), "results/x.parquet")


# --- the configuration grid ---------------------------------------------------------------------

def small_cfg(**changes) -> dict:
    return {"seq_len": [64, 256], "kept_layers": [0.5, "all"], "kept_heads": [3, "all"], "kept_ranks": [0, 8],
            "param_bits": [8, 16], **changes}


def test_grid_resolves_fractions_and_all():
    grid = configuration_grid(SHAPE, small_cfg(kept_layers=[0.25, 0.5, 15, "all"], kept_heads=[0.5]))
    assert sorted({s["kept_layers"] for s in grid}) == [8, 15, 30]  # 0.25 x 30 rounds up; 0.5 x 30 = 15 once
    assert {s["kept_heads"] for s in grid} == {5}  # 0.5 x 9 rounds up
    assert len(grid) == 2 * 3 * 1 * 2 * 2
    assert grid[0] == {"seq_len": 64, "kept_layers": 8, "kept_heads": 5, "kept_ranks": 0, "param_bits": 8}
    assert configuration_grid(SHAPE, small_cfg(kept_layers=[1, 1.0]))[0]["kept_layers"] == 1  # a count


@pytest.mark.parametrize("changes, message", [
    ({"kept_layers": [31]}, r"grid\.kept_layers: 31 is above the model's 30 layers"),
    ({"kept_heads": [1.5]}, r"grid\.kept_heads: 1\.5 is not a whole number \(fractions"),
    ({"kept_heads": [0]}, r"grid\.kept_heads: 0 is below the minimum 1"),
    ({"kept_ranks": [0.5]}, r"grid\.kept_ranks: 0\.5 is not a whole number"),
    ({"kept_ranks": ["all"]}, r"grid\.kept_ranks: 'all' is not a whole number"),
    ({"param_bits": [12]}, r"grid\.param_bits: 12 bits is not one of"),
    ({"seq_len": 64}, r"grid\.seq_len: must be a non-empty list"),
    ({"layers": [1]}, r"grid: unknown field\(s\) \['layers'\]"),
])
def test_grid_errors_name_the_field(changes, message):
    with pytest.raises(GridError, match=message):
        configuration_grid(SHAPE, small_cfg(**changes))


def test_grid_needs_every_field():
    cfg = small_cfg()
    del cfg["kept_ranks"]
    with pytest.raises(GridError, match=r"grid\.kept_ranks: missing"):
        configuration_grid(SHAPE, cfg)


def test_device_modules_import_neither_torch_nor_matplotlib():
    code = ("import sys, wattpeft.devices.table, wattpeft.devices.roofline, wattpeft.devices.grid; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
