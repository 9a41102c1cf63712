"""Aggregation, statistics, figures and report captions (wattpeft.report)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from wattpeft import __version__
from wattpeft.report import (
    aggregate_family,
    combine_families,
    FIGURES,
    MetricsFileError,
    aggregate,
    figure_names,
    make_figure,
    percent_gap,
    plot_learning_curve,
    write_aggregate,
)
from wattpeft.utils.io import read_json

REPORT_DIR = Path(__file__).resolve().parents[1] / "workflow" / "report"

FAMILIES = {
    "sentiment": {
        "primary_metric": {"name": "accuracy", "direction": "maximize"},
        "methods": {"fwlora": {"role": "proposed"}, "lora": {"role": "baseline"}, "adalora": {"role": "baseline"}},
    },
    # latency as the primary metric: lower is better, so the gap sign flips.
    "speed": {
        "primary_metric": {"name": "latency_p50_ms", "direction": "minimize"},
        "methods": {"fast": {"role": "proposed"}, "slow": {"role": "baseline"}},
    },
    "summ": {
        "primary_metric": {"name": "rougeL", "direction": "maximize"},
        "methods": {"lora": {"role": "baseline"}},
    },
    "tiny": {
        "primary_metric": {"name": "accuracy", "direction": "maximize"},
        "methods": {"new": {"role": "proposed"}, "old": {"role": "baseline"}},
    },
}

# (family, method, seed) -> metric values; None marks an unavailable value.
ACCURACY = {
    "fwlora": [0.80, 0.82, 0.84],  # mean 0.82, std 0.02
    "lora": [0.78, 0.79, 0.77],  # mean 0.78, std 0.01
    "adalora": [0.70, 0.90, 0.71],  # best single seed overall, but mean 0.77
}
LATENCY = {"fast": [3.0, 3.2, 3.4], "slow": [3.9, 4.0, 4.1]}  # means 3.2 and 4.0


def classification_metrics(accuracy: float, energy: float | None) -> dict:
    return {
        "accuracy": accuracy, "mcc": 2 * accuracy - 1, "macro_f1": accuracy - 0.01,
        "latency_p50_ms": 3.0, "latency_p99_ms": 4.0,
        "energy_j_per_sample": energy, "energy_j_per_sample_net": None if energy is None else energy / 2,
        "train_time_s": 40.0, "trainable_params": 110592, "achieved_budget_pct": 0.49, "eval_loss": 0.45,
    }


def run_record(family: str, method: str, seed: int, metrics: dict, energy_source: str, budget: float = 0.5) -> dict:
    group_id = f"{family}--{method}--b{budget}"
    return {
        "run_id": f"{group_id}--s{seed}", "group_id": group_id, "family": family, "method": method,
        "role": FAMILIES[family]["methods"][method]["role"], "model": "minilm", "dataset": "rt",
        "budget": budget, "seed": seed, "mode": "full", "task": "classification", "metrics": metrics,
        "energy_source": energy_source,
        "energy_reason": "no NVML, no RAPL on this host" if energy_source == "unavailable" else None,
        "hardware": {"device": "cpu-test", "threads": 1},
        "config_hash": f"cfg-{method}-{seed}", "data_hash": f"data-{family}", "n_test": 64,
    }


def all_records() -> list[dict]:
    records = []
    for method, values in ACCURACY.items():
        # lora has no energy counter; the others carry a labelled estimate.
        source = "unavailable" if method == "lora" else "estimated"
        for seed, accuracy in enumerate(values):
            energy = None if source == "unavailable" else 0.02 + 0.001 * seed
            records.append(run_record("sentiment", method, seed, classification_metrics(accuracy, energy), source))
    for method, values in LATENCY.items():
        for seed, latency in enumerate(values):
            metrics = classification_metrics(0.8, None) | {"latency_p50_ms": latency}
            records.append(run_record("speed", method, seed, metrics, "unavailable"))
    summary_metrics = {"rouge1": 0.31, "rouge2": 0.10, "rougeL": 0.25, "latency_p50_ms": 80.0,
                       "latency_p99_ms": 95.0, "energy_j_per_sample": None, "energy_j_per_sample_net": None}
    records.append(run_record("summ", "lora", 0, summary_metrics, "unavailable", budget=0.1))
    records.append(run_record("tiny", "new", 0, classification_metrics(0.9, None), "unavailable"))
    records.append(run_record("tiny", "old", 0, classification_metrics(0.8, None), "unavailable"))
    return records


def write_records(root: Path, records: list[dict]) -> list[Path]:
    paths = []
    for record in records:
        path = root / record["run_id"] / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[dict, Path, list[Path]]:
    root = tmp_path_factory.mktemp("runs")
    paths = write_records(root, all_records())
    aggregated = write_aggregate(paths, FAMILIES, "sentiment", root / "comparison")
    return aggregated, root / "comparison", paths


@pytest.fixture()
def fresh_paths(tmp_path) -> list[Path]:
    return write_records(tmp_path, all_records())


# ---------------------------------------------------------------- seed statistics


def test_group_mean_std_and_standard_error_use_sqrt_n(written):
    summary = written[0]["families"]["sentiment"]["summary"]["accuracy"]
    proposed = summary["sentiment--fwlora--b0.5"]
    assert proposed["n"] == 3 and proposed["seeds"] == [0, 1, 2]
    assert proposed["mean"] == pytest.approx(0.82, abs=1e-12)
    assert proposed["std"] == pytest.approx(0.02, abs=1e-12)
    assert proposed["se"] == pytest.approx(0.02 / math.sqrt(3), abs=1e-12)  # 0.011547, not std/n = 0.00667
    baseline = summary["sentiment--lora--b0.5"]
    assert (baseline["mean"], baseline["std"]) == (pytest.approx(0.78, abs=1e-12), pytest.approx(0.01, abs=1e-12))
    assert baseline["se"] == pytest.approx(0.0057735026918962584, abs=1e-12)


def test_best_groups_are_chosen_on_means_not_single_seeds(written):
    family = written[0]["families"]["sentiment"]
    # adalora has the best single run (0.90) but the lower mean (0.77 < 0.78).
    assert family["best_baseline"]["group_id"] == "sentiment--lora--b0.5"
    assert family["best_baseline"]["value"] == pytest.approx(0.78, abs=1e-12)
    best = family["best_proposed"]
    assert best["group_id"] == "sentiment--fwlora--b0.5"
    assert best["run_id"] == "sentiment--fwlora--b0.5--s2"  # its best single seed
    assert best["n"] == 3 and best["seeds"] == [0, 1, 2]
    assert best["se"] == pytest.approx(0.02 / math.sqrt(3), abs=1e-12)
    assert best["config_hash"] == "cfg-fwlora-2" and best["data_hash"] == "data-sentiment"
    assert best["hardware"] == {"device": "cpu-test", "threads": 1}
    assert best["energy_source"] == "estimated"


# ---------------------------------------------------------------- gap


def test_gap_is_positive_when_proposed_is_better_for_a_maximised_metric(written):
    family = written[0]["families"]["sentiment"]
    assert family["primary_metric"] == "accuracy" and family["primary_metric_direction"] == "maximize"
    assert family["gap"] == pytest.approx((0.82 - 0.78) / 0.78 * 100, abs=1e-9)  # 5.128...
    assert family["gap_note"] is None


def test_gap_sign_flips_for_a_minimised_metric(written):
    family = written[0]["families"]["speed"]
    assert family["primary_metric_direction"] == "minimize"
    assert family["best_proposed"]["value"] == pytest.approx(3.2, abs=1e-12)
    assert family["best_baseline"]["value"] == pytest.approx(4.0, abs=1e-12)
    assert family["gap"] == pytest.approx(20.0, abs=1e-9)  # 20% lower latency = +20


def test_percent_gap_edge_cases():
    assert percent_gap(0.9, 0.8, "maximize")[0] == pytest.approx(12.5)
    assert percent_gap(0.7, 0.8, "maximize")[0] == pytest.approx(-12.5)
    assert percent_gap(1.2, 1.0, "minimize")[0] == pytest.approx(-20.0)
    assert percent_gap(-0.9, -1.0, "maximize")[0] == pytest.approx(10.0)  # |baseline| in the denominator
    gap, note = percent_gap(0.5, 0.0, "maximize")
    assert gap is None and "0" in note
    assert percent_gap(None, 0.5, "maximize") == (None, "proposed value unavailable")


def test_family_without_proposed_method_has_null_gap_and_a_note(written):
    family = written[0]["families"]["summ"]
    assert family["best_proposed"] is None
    assert family["gap"] is None
    assert family["gap_note"] == "no proposed method in this family"
    assert family["best_baseline"]["value"] == pytest.approx(0.25)
    assert family["significance"]["tests"] == {}


# ---------------------------------------------------------------- significance


def test_welch_test_with_n_at_least_2(written):
    tests = written[0]["families"]["sentiment"]["significance"]["tests"]
    assert set(tests) == {"sentiment--lora--b0.5", "sentiment--adalora--b0.5"}
    result = tests["sentiment--lora--b0.5"]
    # Welch: t = (0.82 - 0.78) / sqrt(0.02^2/3 + 0.01^2/3), df = 2.941...
    t_expected = 0.04 / math.sqrt(0.0004 / 3 + 0.0001 / 3)
    assert result["test"] == "welch_t"
    assert result["statistic"] == pytest.approx(t_expected, rel=1e-9)
    assert result["statistic"] == pytest.approx(3.0983866769659336, rel=1e-9)
    a, b = 0.0004 / 3, 0.0001 / 3
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / 2)
    from scipy.stats import t as student_t

    assert result["p_value"] == pytest.approx(2 * student_t.sf(t_expected, df), rel=1e-6)
    assert (result["n_proposed"], result["n_baseline"]) == (3, 3)


def test_no_test_with_a_single_seed(written):
    family = written[0]["families"]["tiny"]
    result = family["significance"]["tests"]["tiny--old--b0.5"]
    assert result["test"] is None and result["reason"] == "n < 2"
    assert result["statistic"] is None and result["p_value"] is None
    stats = family["summary"]["accuracy"]["tiny--new--b0.5"]
    assert stats["n"] == 1 and stats["std"] is None and stats["se"] is None
    assert "n = 1" in stats["note"]
    assert family["best_proposed"]["se"] is None and "n = 1" in family["best_proposed"]["se_note"]
    assert family["gap"] == pytest.approx(12.5)


# ---------------------------------------------------------------- unavailable values


def test_null_energy_stays_null_everywhere(written):
    aggregated, out_dir, _ = written
    run_id = "sentiment--lora--b0.5--s0"
    assert aggregated["metrics"]["energy_j_per_sample"][run_id] is None
    on_disk = read_json(out_dir / "aggregated_metrics.json")
    assert on_disk["metrics"]["energy_j_per_sample"][run_id] is None
    stats = on_disk["families"]["sentiment"]["summary"]["energy_j_per_sample"]["sentiment--lora--b0.5"]
    assert stats["mean"] is None and stats["n"] == 0 and stats["n_unavailable"] == 3
    assert stats["energy_source"] == "unavailable"
    estimated = on_disk["families"]["sentiment"]["summary"]["energy_j_per_sample"]["sentiment--fwlora--b0.5"]
    assert estimated["mean"] == pytest.approx(0.021) and estimated["energy_source"] == "estimated"
    assert on_disk["families"]["sentiment"]["runs"][run_id]["energy_reason"] == "no NVML, no RAPL on this host"


def test_energy_value_with_unavailable_source_is_refused(tmp_path):
    record = run_record("summ", "lora", 0, {"rougeL": 0.2, "energy_j_per_sample": 0.0}, "unavailable")
    paths = write_records(tmp_path, [record])
    with pytest.raises(MetricsFileError, match="energy_source is 'unavailable'"):
        aggregate(paths, {"summ": FAMILIES["summ"]}, "summ")


# ---------------------------------------------------------------- failing loudly


def test_missing_metrics_file_raises_naming_the_path(fresh_paths):
    missing = fresh_paths[4]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        aggregate(fresh_paths, FAMILIES, "sentiment")


def test_missing_required_key_raises_naming_file_and_key(fresh_paths):
    broken = fresh_paths[0]
    record = json.loads(broken.read_text())
    del record["data_hash"]
    broken.write_text(json.dumps(record))
    with pytest.raises(MetricsFileError, match=re.escape(str(broken)) + r".*data_hash"):
        aggregate(fresh_paths, FAMILIES, "sentiment")


def test_configured_method_without_runs_raises(fresh_paths):
    without_adalora = [p for p in fresh_paths if "adalora" not in str(p)]
    with pytest.raises(MetricsFileError, match=r"family 'sentiment'.*adalora"):
        aggregate(without_adalora, FAMILIES, "sentiment")


def test_role_that_differs_from_config_raises(fresh_paths):
    stale = fresh_paths[0]
    record = json.loads(stale.read_text()) | {"role": "baseline"}
    stale.write_text(json.dumps(record))
    with pytest.raises(MetricsFileError, match="configured role 'proposed'"):
        aggregate(fresh_paths, FAMILIES, "sentiment")


# ---------------------------------------------------------------- file layout


def test_top_level_file_keeps_seed_schema_and_headline(written):
    aggregated, out_dir, paths = written
    on_disk = read_json(out_dir / "aggregated_metrics.json")
    assert on_disk["schema_version"] == 1
    assert on_disk["generated_by"] == {"package": "wattpeft", "version": __version__}
    assert on_disk["headline_family"] == "sentiment" and on_disk["primary_metric"] == "accuracy"
    for key in ("best_proposed", "best_baseline", "gap"):
        assert on_disk[key] == on_disk["families"]["sentiment"][key]
    covered = {run_id for per_run in on_disk["metrics"].values() for run_id in per_run}
    assert len(covered) == len(paths) == on_disk["n_runs"]
    assert on_disk["metrics"]["rougeL"] == {"summ--lora--b0.1--s0": 0.25}
    assert on_disk["energy_sources"] == ["estimated", "unavailable"]
    for family in FAMILIES:
        per_family = read_json(out_dir / family / "aggregated_metrics.json")
        assert per_family["family"] == family and per_family["schema_version"] == 1
        assert per_family["primary_metric"] == FAMILIES[family]["primary_metric"]["name"]


def test_per_family_files_combine_to_the_same_top_level(written):
    """The workflow aggregates each family alone, then combines: same result as at once."""
    aggregated, out_dir, paths = written
    per_family = {
        family: aggregate_family(family, [p for p in paths if read_json(p)["family"] == family], cfg)
        for family, cfg in FAMILIES.items()
    }
    assert per_family["sentiment"] == read_json(out_dir / "sentiment" / "aggregated_metrics.json")
    assert json.loads(json.dumps(combine_families(per_family, "sentiment"))) == read_json(
        out_dir / "aggregated_metrics.json"
    )


# ---------------------------------------------------------------- figures

PNG_MAGIC, PDF_MAGIC = b"\x89PNG", b"%PDF"


@pytest.mark.parametrize("family", ["sentiment", "summ"])  # summ: every energy value is null
@pytest.mark.parametrize("kind", list(FIGURES))
def test_every_figure_kind_writes_pdf_and_png(written, tmp_path, family, kind):
    aggregated = written[0]
    assert kind in figure_names(aggregated["families"][family])
    written_paths = make_figure(kind, family, aggregated, tmp_path / kind)
    pdf, png = tmp_path / f"{kind}.pdf", tmp_path / f"{kind}.png"
    assert written_paths == [pdf, png]
    assert pdf.read_bytes()[:4] == PDF_MAGIC and png.read_bytes()[:4] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == [pdf.name, png.name]  # no temp files left


def test_figures_are_byte_stable_and_accept_a_per_family_file(written, tmp_path):
    per_family = read_json(written[1] / "sentiment" / "aggregated_metrics.json")
    make_figure("primary_bar", "sentiment", written[0], tmp_path / "a")
    make_figure("primary_bar", "sentiment", per_family, tmp_path / "b")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_unknown_figure_kind_is_refused(written, tmp_path):
    with pytest.raises(KeyError, match="unknown figure kind"):
        make_figure("pie", "sentiment", written[0], tmp_path / "pie")


def test_learning_curve_with_and_without_loss_records(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = [{"step": s, "epoch": 0, "loss": 0.7 - s / 100, "lr": 1e-4, "grad_norm": 1.0, "elapsed_s": s / 2}
             for s in range(5, 45, 5)]
    lines += [{"step": 20, "split": "validation", "eval_loss": 0.5, "accuracy": 0.7},
              {"step": 40, "split": "validation", "eval_loss": 0.45, "accuracy": 0.74}]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    plot_learning_curve(log, tmp_path / "curve", "run: learning curve")
    assert (tmp_path / "curve.png").read_bytes()[:4] == PNG_MAGIC
    assert (tmp_path / "curve.pdf").read_bytes()[:4] == PDF_MAGIC

    short = tmp_path / "short.jsonl"  # trial mode: fewer steps than log_every
    short.write_text(json.dumps({"step": 2, "split": "validation", "eval_loss": 0.69, "accuracy": 0.5}) + "\n")
    plot_learning_curve(short, tmp_path / "short", "trial run")
    assert (tmp_path / "short.png").is_file() and (tmp_path / "short.pdf").is_file()


def test_truncated_log_line_raises_with_line_number(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 5, "loss": 0.6}) + "\n" + '{"step": 10, "lo')
    with pytest.raises(ValueError, match=re.escape(f"{log}:2")):
        plot_learning_curve(log, tmp_path / "curve", "broken")


# ---------------------------------------------------------------- captions


class _Wildcards(dict):
    __getattr__ = dict.get


@pytest.mark.parametrize("caption", sorted(p.name for p in REPORT_DIR.glob("*.rst")))
def test_report_captions_render_as_restructuredtext(caption):
    """Render as Snakemake's report() does (Jinja, then docutils); any warning fails."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        wildcards = _Wildcards(family="sentiment", run_id="sentiment--lora--b0.5--s0")
        config = {"mode": "full"}

    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string((REPORT_DIR / caption).read_text())
    rendered = text.render(snakemake=Snakemake)
    html = publish_parts(rendered, writer="html", settings_overrides={"halt_level": 2})["body"]
    assert "unavailable" in html
    assert "{{" not in html


def test_a_caption_exists_for_every_figure_kind():
    names = {p.stem for p in REPORT_DIR.glob("*.rst")}
    assert set(FIGURES) | {"learning_curve", "workflow"} <= names


def test_markdown_results_table_shows_se_and_unavailable(written):
    from wattpeft.report.markdown import results_table

    aggregated, _, _ = written
    table = results_table(aggregated)
    first_group = next(iter(aggregated["families"]["sentiment"]["groups"]))
    stats = aggregated["families"]["sentiment"]["summary"]["accuracy"][first_group]
    assert f"{stats['mean']:.3f} ± {stats['se']:.3f}" in table
    # n = 1: a mean without ± se; no achieved budget recorded in these records: said so
    assert "| summ | lora (baseline) | 0.1 | unavailable | 1 | " in table
    assert "unavailable" in table


def test_a_counter_with_no_valid_window_is_never_called_no_counter():
    from wattpeft.report.figures import _table_cell, missing_energy_text

    assert missing_energy_text("unavailable", []) == "unavailable (no counter)"
    assert missing_energy_text("nvml_counter", ["zero_delta"]) == "no valid window (zero_delta)"
    family = {"summary": {"energy_j_per_sample": {"g": {"mean": None, "se": None, "n": 3,
              "energy_source": "nvml_counter", "energy_flags": ["counter_reset"]}}}}
    cell = _table_cell(family, "energy_j_per_sample", "g")
    assert "no counter" not in cell and "counter_reset" in cell


# ---------------------------------------------------------------- per-module data and the new figure kinds

MODULE_TYPES = ("attention.self.query", "attention.self.value", "output.dense")
TRAIN_TIME = {"fwlora": 60.0, "adalora": 80.0, "lora": 40.0}  # vs lora: 1.50x and 2.00x
DELTA_SCALE = {"fwlora": 1.0, "adalora": 0.8, "lora": 0.6}
# lora is neither the first method nor the first baseline: the table must still pick it.
RANKED = {
    "primary_metric": {"name": "accuracy", "direction": "maximize"},
    "methods": {"fwlora": {"role": "proposed"}, "adalora": {"role": "baseline"}, "lora": {"role": "baseline"}},
}


def module_names(n_layers: int = 3) -> list[str]:
    return [f"bert.encoder.layer.{i}.{kind}" for i in range(n_layers) for kind in MODULE_TYPES]


def per_module(method: str, seed: int, budget: float, importance: bool = True) -> dict:
    names = module_names()
    scale = DELTA_SCALE[method] * budget
    data = {"delta_norm": {name: scale * (1.0 + i) + 0.1 * seed for i, name in enumerate(names)}}
    data["delta_norm"]["classifier"] = 2.0  # outside numbered layers: in the data, not on the grid
    if method == "fwlora" and importance:
        raw = [1.0 + i + seed for i in range(len(names))]
        data["importance"] = {name: value / sum(raw) for name, value in zip(names, raw)}
    return data


def module_family(root: Path, methods=tuple(RANKED["methods"]), importance: bool = True,
                  budgets=(0.5, 1.0)) -> dict:
    """A sentiment family with two seeds per (method, budget), each run carrying per_module."""
    records = []
    for method in methods:
        for budget in budgets:
            for seed, accuracy in enumerate(ACCURACY[method][:2]):
                metrics = classification_metrics(accuracy, 0.02) | {"train_time_s": TRAIN_TIME[method] * budget}
                record = run_record("sentiment", method, seed, metrics, "estimated", budget=budget)
                records.append(record | {"per_module": per_module(method, seed, budget, importance)})
    cfg = {**RANKED, "methods": {m: RANKED["methods"][m] for m in methods}}
    return aggregate_family("sentiment", write_records(root, records), cfg)


def test_per_module_data_reaches_the_aggregated_run_record(tmp_path):
    family = module_family(tmp_path)
    assert family["runs"]["sentiment--fwlora--b0.5--s1"]["per_module"] == per_module("fwlora", 1, 0.5)
    lora = family["runs"]["sentiment--lora--b1.0--s0"]["per_module"]
    assert set(lora) == {"delta_norm"} and lora["delta_norm"]["classifier"] == 2.0
    assert "per_module" not in family["metrics"] and "delta_norm" not in family["summary"]  # metrics stay scalar


def test_run_without_per_module_data_aggregates_with_null(written):
    assert written[0]["families"]["sentiment"]["runs"]["sentiment--lora--b0.5--s0"]["per_module"] is None


def test_module_names_split_into_layer_index_and_module_type():
    from wattpeft.report.layers import layer_grid, split_module_name

    assert split_module_name("bert.encoder.layer.3.attention.self.query") == (3, "attention.self.query")
    assert split_module_name("model.layers.11.mlp.down_proj") == (11, "mlp.down_proj")
    assert split_module_name("classifier") == (None, "classifier")
    assert split_module_name("bert.pooler.dense") == (None, "bert.pooler.dense")
    grid = layer_grid([*module_names(2), "classifier"])
    assert (grid.n_layers, grid.types, grid.outside) == (2, list(MODULE_TYPES), ["classifier"])


def test_module_statistics_are_means_over_seeds_and_unchanged_layers_count_as_zero(tmp_path):
    from wattpeft.report.layers import group_module_stats

    family = module_family(tmp_path)
    stats = group_module_stats(family, "sentiment--lora--b1.0", "delta_norm", absent=0.0)
    first = stats["bert.encoder.layer.0.attention.self.query"]
    assert first["mean"] == pytest.approx(0.65) and first["n"] == 2 and first["se"] == pytest.approx(0.05)
    run = family["runs"]["sentiment--lora--b1.0--s1"]
    del run["per_module"]["delta_norm"]["bert.encoder.layer.2.output.dense"]  # unchanged in seed 1
    stats = group_module_stats(family, "sentiment--lora--b1.0", "delta_norm", absent=0.0)
    assert stats["bert.encoder.layer.2.output.dense"]["mean"] == pytest.approx(0.6 * 9 / 2)


def test_method_budget_table_times_are_relative_to_lora(tmp_path):
    from wattpeft.report.figures import method_budget_table

    table = method_budget_table(module_family(tmp_path))
    assert table["reference"] == "lora"
    assert table["methods"] == ["fwlora", "adalora", "lora"] and table["budgets"] == [0.5, 1.0]
    cells = dict(zip(table["methods"], table["cells"]))
    # Relative to fwlora (first method) they would read 1.00x, to adalora (first baseline) 0.75x.
    assert all("time 1.50×" in cell for cell in cells["fwlora"])
    assert all("time 2.00×" in cell for cell in cells["adalora"])
    assert all("time 1.00×" in cell for cell in cells["lora"])
    # accuracy in percent with one decimal, MCC with two, mean ± se over the two seeds
    assert cells["fwlora"][0] == "acc 81.0 ± 1.0 / MCC 0.62 ± 0.02\nn=2 · time 1.50×"
    assert table["best"] == [0, 0]  # fwlora has the best mean accuracy at both budgets


def test_method_budget_table_without_lora_uses_the_first_baseline(tmp_path):
    from wattpeft.report.figures import method_budget_table

    table = method_budget_table(module_family(tmp_path, methods=("fwlora", "adalora")))
    assert table["reference"] == "adalora" and "first baseline" in table["reference_note"]
    assert all("time 0.75×" in cell for cell in table["cells"][0])


def _figure_text(kind: str, family_obj: dict) -> str:
    from matplotlib.figure import Figure

    fig = Figure()
    FIGURES[kind](fig, "sentiment", family_obj)
    texts = [t.get_text() for t in fig.texts]
    texts += [t.get_text() for ax in fig.axes for t in (*ax.texts, ax.title)]
    return " ".join(" ".join(texts).split())  # wrapped titles joined back into one line


@pytest.mark.parametrize("importance", [True, False])
@pytest.mark.parametrize("kind", ["method_budget_table", "importance", "delta_norm"])
def test_new_figure_kinds_draw_per_module_data(tmp_path, kind, importance):
    family = module_family(tmp_path / "runs", importance=importance)
    paths = make_figure(kind, "sentiment", family, tmp_path / kind)
    assert [p.read_bytes()[:4] for p in paths] == [PDF_MAGIC, PNG_MAGIC]
    text = _figure_text(kind, family)
    if kind == "importance":
        said = "no method in family sentiment reports per-module importance"
        assert (said in text) != importance
    if kind == "delta_norm":
        assert "‖ΔW‖_F (merged − base)" in text and "attention.self.value" in text
    if kind == "method_budget_table":
        assert "reference: lora" in text


def test_delta_norm_figure_keeps_the_largest_budget_when_space_is_short(tmp_path, monkeypatch):
    import wattpeft.report.figures as figures

    monkeypatch.setattr(figures, "MAX_DELTA_PANELS", 4)  # 2 budgets x 3 module types = 6 panels
    family = module_family(tmp_path / "runs", methods=("lora",))
    _, budgets, note, _, _ = figures._delta_layout(family)
    assert budgets == [1.0] and "largest budget only" in note
    assert "largest budget only" in _figure_text("delta_norm", family)
    make_figure("delta_norm", "sentiment", family, tmp_path / "delta")


# ---------------------------------------------------------------- spectral figures: gate utilisation, spectral table

SPECTRAL = {
    "primary_metric": {"name": "rougeL", "direction": "maximize"},
    "methods": {"hest": {"role": "proposed"}, "tabs": {"role": "baseline"}, "lora": {"role": "baseline"}},
}
ENERGY_TABLE = {"source": "default", "reference": "Horowitz, ISSCC 2014 (test)", "j_per_flop": {"int8": 1.15e-13, "16bit": 7.5e-13}}
GATES = {  # per method and seed: {state: share per layer (3 layers)}
    "hest": [{"off": [0.1, 0.0, 0.0], "int8": [0.6, 0.8, 0.7], "fp16": [0.3, 0.2, 0.3]},
             {"off": [0.3, 0.0, 0.2], "int8": [0.4, 0.6, 0.5], "fp16": [0.3, 0.4, 0.3]}],
    "tabs": [{"off": [0.0, 0.0, 0.0], "fp16": [1.0, 1.0, 1.0]}, {"off": [0.5, 0.0, 0.0], "fp16": [0.5, 1.0, 1.0]}],
}


def spectral_metrics(method: str, seed: int, measured: float | None) -> dict:
    controller = {"hest": 4992, "tabs": 276960, "lora": 0}[method]
    adapter = {"hest": 5e-5, "tabs": 1.4e-4, "lora": 0.0}[method]
    metrics = {"rougeL": 0.44 + 0.01 * seed, "latency_p99_ms": 500.0 + seed, "energy_j_per_sample": measured,
               "modelled_j_per_sample": 0.0209 + adapter, "modelled_adapter_j_per_sample": adapter,
               "controller_params": controller, "adapter_flop_share_max": 0.0068 if adapter else 0.0}
    if method in ("hest", "tabs"):  # gated: E_max (HEST's cap) and one 4096-token input
        e_max = 1.06e-4 if method == "hest" else None
        metrics |= {"e_max_j": e_max, "modelled_adapter_j_long_sample": 1.05e-4 if e_max else 5.66e-3}
        if e_max:
            metrics["e_max_worst_ratio"] = 0.999 - 0.001 * seed
    return metrics


def spectral_family(root: Path, gates: dict = GATES, energy_source: str = "unavailable") -> dict:
    """hest (gated: off/int8/fp16), tabs (off/fp16) and lora (no gates), two seeds each."""
    records = []
    for method, entry in SPECTRAL["methods"].items():
        for seed in (0, 1):
            measured = None if energy_source == "unavailable" else 0.03 + 0.001 * seed
            group_id = f"spec--{method}--b0.34"
            records.append({
                "run_id": f"{group_id}--s{seed}", "group_id": group_id, "family": "spec", "method": method,
                "role": entry["role"], "model": "smollm2", "dataset": "aclsum", "budget": 0.34, "seed": seed,
                "mode": "full", "task": "summarisation", "metrics": spectral_metrics(method, seed, measured),
                "energy_source": energy_source, "hardware": {"device": "cpu-test"}, "config_hash": f"c{seed}",
                "data_hash": "d", "energy_table": ENERGY_TABLE,
                "per_layer": {"gate_utilisation": gates[method][seed]} if method in gates else {},
            })
    return aggregate_family("spec", write_records(root, records), SPECTRAL)


def test_gate_utilisation_and_the_energy_table_reach_the_aggregate(tmp_path):
    family = spectral_family(tmp_path)
    assert list(family["gate_utilisation"]) == ["spec--hest--b0.34", "spec--tabs--b0.34"]  # lora has no gates
    hest, tabs = family["gate_utilisation"].values()
    assert hest["states"] == ["off", "int8", "fp16"] and tabs["states"] == ["off", "fp16"]
    assert hest["n_layers"] == 3 and hest["n"] == 2 and hest["seeds"] == [0, 1]
    assert hest["mean"]["off"] == pytest.approx([0.2, 0.0, 0.1])
    assert tabs["mean"]["fp16"] == pytest.approx([0.75, 1.0, 1.0])
    assert family["runs"]["spec--hest--b0.34--s1"]["per_layer"]["gate_utilisation"] == GATES["hest"][1]
    assert family["energy_tables"] == [ENERGY_TABLE]
    assert {g["energy_table"] for g in family["groups"].values()} == {"default"}
    assert family["summary"]["modelled_adapter_j_per_sample"]["spec--hest--b0.34"]["mean"] == pytest.approx(5e-5)
    assert family["metric_directions"]["modelled_j_per_sample"] == "minimize"


def test_runs_without_gates_or_energy_table_aggregate_to_empty_entries(written):
    family = written[0]["families"]["sentiment"]
    assert family["energy_tables"] == [] and family["gate_utilisation"] == {}
    assert {g["energy_table"] for g in family["groups"].values()} == {None}


def test_gate_utilisation_over_different_layer_counts_is_refused(tmp_path):
    gates = {**GATES, "tabs": [GATES["tabs"][0], {"off": [0.0, 0.0], "fp16": [1.0, 1.0]}]}
    with pytest.raises(MetricsFileError, match="spec--tabs--b0.34.*different numbers of layers"):
        spectral_family(tmp_path, gates)


def _draw(kind: str, family: str, family_obj: dict) -> tuple[str, str | None]:
    from matplotlib.figure import Figure

    fig = Figure()
    note = FIGURES[kind](fig, family, family_obj)
    texts = [t.get_text() for t in fig.texts]
    texts += [t.get_text() for ax in fig.axes for t in (*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label)]
    return " ".join(" ".join(texts).split()), note


@pytest.mark.parametrize("kind", ["gate_utilisation", "spectral_table"])
def test_spectral_figures_render_with_data_and_say_no_data_without(written, tmp_path, kind):
    family = spectral_family(tmp_path / "runs")
    paths = make_figure(kind, "spec", family, tmp_path / kind)
    assert [p.read_bytes()[:4] for p in paths] == [PDF_MAGIC, PNG_MAGIC]
    text, note = _draw(kind, "spec", family)
    assert "no data" not in text
    if kind == "gate_utilisation":
        assert "hest [proposed]" in text and "tabs [baseline]" in text and "lora" not in text
        assert "layer (0 = nearest the input)" in text and "n=2 seeds" in text
        assert "hardened gates" in note and "test prompts" in note
    else:
        assert "priced by the energy table (default), not measured" in text
        assert "energy table 'default'" in note and "Horowitz, ISSCC 2014 (test)" in note

    empty = written[0]["families"]["sentiment"]  # no gates, no modelled energy
    make_figure(kind, "sentiment", empty, tmp_path / f"{kind}-empty")
    text, note = _draw(kind, "sentiment", empty)
    assert "no data" in text and note is None


def test_spectral_table_cells(tmp_path):
    from wattpeft.report.spectral import joules, spectral_table

    table = spectral_table(spectral_family(tmp_path))
    assert table["rows"] == ["hest [proposed]", "tabs [baseline]", "lora [baseline]"]
    assert table["table_source"] == "default" and table["has_data"]
    assert sum("modelled (table: default)" in column for column in table["columns"]) == 2
    assert "(source: unavailable)" in table["columns"][3]
    hest, tabs, lora = table["cells"]
    assert hest[0] == "0.445 ± 0.005\n(n=2)"  # ROUGE-L 0.44 and 0.45
    assert hest[1] == "20.95 ± 0 mJ" and hest[2] == "50 ± 0 µJ"
    assert hest[3] == "unavailable (no counter)"
    assert hest[4] == "500.5 ± 0.5" and hest[5] == "4,992 ± 0" and hest[6] == "0.68% ± 0.00%"
    assert tabs[2] == "140 ± 0 µJ" and tabs[5] == "276,960 ± 0"
    assert lora[2] == "0 J" and lora[5] == "0 ± 0" and lora[6] == "0.00% ± 0.00%"  # merged: no adapter path
    assert joules(5.6623e-3) == "5.662 mJ" and joules(None) == "unavailable" and joules(1.2e-7, 1e-8) == "120 ± 10 nJ"


def test_spectral_table_names_a_measured_source(tmp_path):
    from wattpeft.report.spectral import spectral_table

    table = spectral_table(spectral_family(tmp_path, energy_source="nvml_counter"))
    assert "(source: nvml_counter)" in table["columns"][3]
    assert table["cells"][0][3] == "30.5 ± 0.5 mJ\nmeasured (NVML energy counter)"


# ---------------------------------------------------------------- hardware-surrogate figures: surrogate accuracy, hardware table

HARDWARE = {
    "primary_metric": {"name": "accuracy", "direction": "maximize"},
    "methods": {"echorda": {"role": "proposed"}, "metas_peft": {"role": "baseline"}, "lora": {"role": "baseline"}},
}
UNSEEN = "Jetson-Orin-NX"
MEASUREMENTS = {"echorda": 200, "metas_peft": 5, "lora": 0}
KEPT = {"echorda": {"seq_len": 128, "kept_layers": 4, "kept_heads": 9.5, "kept_ranks": 4.0, "param_bits": 16},
        "metas_peft": {"seq_len": 128, "kept_layers": 6, "kept_heads": 12.0, "kept_ranks": 8.0, "param_bits": 16}}


def hardware_cost(method: str, seed: int) -> dict:
    scale = {"echorda": 0.5, "metas_peft": 0.7, "lora": 1.0}[method]
    return {"unseen_energy_j": 0.2 * scale + 0.001 * seed, "unseen_latency_ms": 30.0 * scale,
            "unseen_peak_power_w": 15.0 + scale, "on_device_measurements": MEASUREMENTS[method]}


def surrogate_rows() -> list[dict]:
    """Two simulated devices (the unseen one among them) and a measured one; regression_200
    is unavailable on the measured device (too few rows)."""
    rows = []
    for device, source in ((UNSEEN, "simulated"), ("RTX-A6000", "simulated"), ("this-host-cpu", "measured")):
        for p, predictor in enumerate(("meta_surrogate_5shot", "regression_5", "regression_200")):
            for t, target in enumerate(("energy_j", "latency_ms", "peak_power_w")):
                missing = source == "measured" and predictor == "regression_200"
                rows.append({"held_out_device": device, "device_source": source, "predictor": predictor,
                             "target": target, "mape_pct": None if missing else 2.0 + 40.0 * p + t,
                             "within_10pct": None if missing else 0.9 - 0.3 * p, "spearman": None if missing else 0.95 - 0.1 * p,
                             "n_test": 0 if missing else 100, "n_fit": 0 if missing else 5,
                             "unavailable": "120 rows, fewer than test_rows + 200 = 300" if missing else ""})
    return rows


def hardware_family(root: Path) -> dict:
    """echorda, metas_peft and lora, two seeds each, with costs on a simulated unseen device."""
    records = []
    for method, entry in HARDWARE["methods"].items():
        for seed in (0, 1):
            record = run_record("sentiment", "lora", seed, classification_metrics(0.8 + 0.01 * seed, None), "unavailable")
            group_id = f"hw--{method}--b0.5"
            record.update(run_id=f"{group_id}--s{seed}", group_id=group_id, family="hw", method=method, role=entry["role"],
                          device_cost={"device": UNSEEN, "source": "simulated", "reason": "roofline", "s": KEPT.get(method)})
            record["metrics"] |= hardware_cost(method, seed)
            records.append(record)
    family = aggregate_family("hw", write_records(root, records), HARDWARE)
    for run_id, run in family["runs"].items():  # as a hardware-surrogate family's aggregate carries them
        run["device_cost"] = next(r["device_cost"] for r in records if r["run_id"] == run_id)
    return family | {"surrogate_evaluation": surrogate_rows()}


def test_hardware_family_aggregates_a_simulated_hypervolume_frame(tmp_path):
    family = hardware_family(tmp_path)
    assert family["hypervolume"]["device"] == [UNSEEN] and family["hypervolume"]["cost_source"] == ["simulated"]
    assert all(0.0 <= v <= 1.0 for v in family["metrics"]["hypervolume_4d"].values())


@pytest.mark.parametrize("kind", ["surrogate_accuracy", "hardware_table"])
def test_hardware_figures_render_and_label_simulated_costs(written, tmp_path, kind):
    family = hardware_family(tmp_path / "runs")
    paths = make_figure(kind, "hw", family, tmp_path / kind)
    assert [p.read_bytes()[:4] for p in paths] == [PDF_MAGIC, PNG_MAGIC]
    text, note = _draw(kind, "hw", family)
    assert "no data" not in text and "SIMULATED" in text
    if kind == "surrogate_accuracy":
        assert "MAPE (%)" in text and "measured" in text
        assert f"unseen {UNSEEN}, within 10% / Spearman: meta-surrogate, 5-shot 90% / 0.95" in text
        assert "n/a [1]" in text and "[1] 120 rows, fewer than test_rows + 200 = 300" in note
        assert "may have learnt the simulator back" in note
    else:
        assert "reference point: accuracy 0" in note and "SIMULATED (roofline model, not measured)" in note

    empty = written[0]["families"]["sentiment"]  # no surrogate evaluation, no unseen-device cost
    make_figure(kind, "sentiment", empty, tmp_path / f"{kind}-empty")
    text, note = _draw(kind, "sentiment", empty)
    assert "no data" in text and note is None


def test_hardware_table_cells(tmp_path):
    from wattpeft.report.hardware import hardware_table

    table = hardware_table(hardware_family(tmp_path))
    assert table["has_data"] and table["simulated"]
    assert table["rows"] == ["echorda [proposed]", "metas_peft [baseline]", "lora [baseline]"]
    assert all(f"on {UNSEEN}\nSIMULATED" in table["columns"][i] for i in (1, 2, 3))
    echorda, metas, lora = table["cells"]
    assert echorda[0] == "0.805 ± 0.005\n(n=2)" and echorda[2] == "15.0 ± 0.000"
    assert [row[5] for row in table["cells"]] == ["200", "5", "0"]
    assert echorda[6] == "4 layers, 9.5 heads,\nrank 4, 16-bit" and lora[6] == "unavailable"
    assert float(echorda[4].split(" ± ")[0]) > float(lora[4].split(" ± ")[0])  # cheapest on every cost axis
