"""Seed claims as data: each claim filled with our measurements and a verdict (wattpeft.report.claims)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from scipy.stats import t as student_t
from test_report import FAMILIES, classification_metrics, run_record, write_records

from wattpeft.config import ConfigError, validate_config
from wattpeft.report import aggregate_family
from wattpeft.report.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPARABLE,
    check_claims,
    claims_markdown,
    write_claims,
)
from wattpeft.utils.io import read_json

ROOT = Path(__file__).resolve().parents[1]
METHODS = FAMILIES["sentiment"]["methods"]  # fwlora (proposed), lora, adalora (baselines)


def family_cfg(methods=tuple(METHODS), claims=()) -> dict:
    return {
        "model": "minilm", "dataset": "rt", "primary_metric": {"name": "accuracy", "direction": "maximize"},
        "methods": {m: METHODS[m] for m in methods}, "budgets": [0.5], "seeds": [0, 1, 2], "claims": list(claims),
    }


def family(tmp_path, accuracy: dict[str, list[float]], train_time: dict | None = None,
           energy_source: str = "estimated") -> dict:
    """The family object of aggregated_metrics.json for runs with these accuracies (one per seed)."""
    records = []
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            energy = None if energy_source == "unavailable" else 0.02 + 0.001 * seed
            metrics = classification_metrics(value, energy)
            if train_time:
                metrics["train_time_s"] = train_time[method][seed]
            records.append(run_record("sentiment", method, seed, metrics, energy_source))
    paths = write_records(tmp_path, records)
    return aggregate_family("sentiment", paths, family_cfg(methods=list(accuracy)))


def claim(**fields) -> dict:
    base = {"claim": "FW-LoRA matches LoRA", "seed": "004", "metric": "accuracy", "budget": 0.5,
            "method": "fwlora", "against": "lora", "comparison": "matches", "tolerance": 0.01}
    return {**base, **fields}


def check(obj: dict, *claims: dict) -> list[dict]:
    return check_claims("sentiment", family_cfg(claims=claims), obj)


def welch_ci(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """(difference, se, df, t quantile), by hand."""
    import statistics

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return statistics.mean(a) - statistics.mean(b), math.sqrt(va + vb), df, student_t.ppf(0.975, df)


CLOSE = {"fwlora": [0.80, 0.81, 0.82], "lora": [0.805, 0.81, 0.815]}  # same mean 0.81
FAR = {"fwlora": [0.80, 0.81, 0.82], "lora": [0.70, 0.71, 0.72]}  # 10 points apart
WIDE = {"fwlora": [0.70, 0.80, 0.90], "lora": [0.75, 0.80, 0.85]}  # same mean, wide spread


# ---------------------------------------------------------------- matches


def test_matches_holds_when_the_ci_lies_within_the_tolerance(tmp_path):
    (row,) = check(family(tmp_path, CLOSE), claim(tolerance=0.03))
    assert row["verdict"] == HOLDS
    d, se, df, q = welch_ci(CLOSE["fwlora"], CLOSE["lora"])
    estimate = row["estimate"]
    assert estimate["value"] == pytest.approx(d, abs=1e-12)
    assert estimate["df"] == pytest.approx(df) and estimate["t_quantile"] == pytest.approx(q)
    assert (estimate["ci_low"], estimate["ci_high"]) == (pytest.approx(d - q * se), pytest.approx(d + q * se))
    assert row["ours"]["fwlora"] == {"mean": pytest.approx(0.81), "se": pytest.approx(0.01 / math.sqrt(3)), "n": 3}
    assert "lies within" in row["reason"]


def test_matches_with_a_tolerance_narrower_than_the_ci_is_inconclusive(tmp_path):
    # Same data: the CI (about +-0.028) straddles +-0.01.
    (row,) = check(family(tmp_path, CLOSE), claim(tolerance=0.01))
    assert row["verdict"] == INCONCLUSIVE


def test_matches_does_not_hold_when_the_ci_lies_outside_the_tolerance(tmp_path):
    (row,) = check(family(tmp_path, FAR), claim(tolerance=0.01))
    assert row["verdict"] == FAILS
    assert row["estimate"]["ci_low"] > 0.01
    assert "outside" in row["reason"]


def test_overlapping_ci_is_inconclusive_for_matches_and_better(tmp_path):
    obj = family(tmp_path, WIDE)
    matches, better = check(obj, claim(tolerance=0.02), claim(comparison="better", tolerance=None))
    assert matches["verdict"] == better["verdict"] == INCONCLUSIVE
    assert better["estimate"]["ci_low"] < 0 < better["estimate"]["ci_high"]


def test_a_single_seed_is_inconclusive_and_says_why(tmp_path):
    (row,) = check(family(tmp_path, {"fwlora": [0.9], "lora": [0.5]}), claim(comparison="better"))
    assert row["verdict"] == INCONCLUSIVE
    assert "n=1" in row["reason"] and "no spread" in row["reason"]
    assert row["estimate"] is None
    assert row["ours"]["fwlora"]["n"] == 1 and row["ours"]["fwlora"]["se"] is None


# ---------------------------------------------------------------- better and the metric direction


def test_better_follows_the_metric_direction_lower_train_time_is_better(tmp_path):
    times = {"fwlora": [30.0, 31.0, 32.0], "lora": [40.0, 41.0, 42.0]}
    obj = family(tmp_path, CLOSE, train_time=times)
    faster, slower = check(obj, claim(metric="train_time_s", comparison="better"),
                           claim(metric="train_time_s", comparison="better", method="lora", against="fwlora"))
    assert faster["direction"] == "minimize"
    assert faster["verdict"] == HOLDS and faster["estimate"]["value"] == pytest.approx(10.0)
    assert slower["verdict"] == FAILS and slower["estimate"]["value"] == pytest.approx(-10.0)
    assert "lower train_time_s is better" in faster["reason"]


def test_better_on_a_maximised_metric(tmp_path):
    (row,) = check(family(tmp_path, FAR), claim(comparison="better"))
    assert row["verdict"] == HOLDS and row["estimate"]["value"] == pytest.approx(0.10)


# ---------------------------------------------------------------- ratio


@pytest.mark.parametrize("bound, verdict", [(0.9, HOLDS), (0.7, FAILS), (0.78, INCONCLUSIVE)])
def test_ratio_at_most_uses_a_delta_method_ci(tmp_path, bound, verdict):
    times = {"fwlora": [30.0, 31.0, 32.0], "lora": [40.0, 41.0, 42.0]}
    (row,) = check(family(tmp_path, CLOSE, train_time=times),
                   claim(metric="train_time_s", comparison="ratio_at_most", ratio=bound, tolerance=None))
    ratio = 31.0 / 41.0
    se_m = se_a = 1.0 / math.sqrt(3)
    se_ratio = ratio * math.sqrt((se_m / 31.0) ** 2 + (se_a / 41.0) ** 2)
    q = student_t.ppf(0.975, welch_ci(times["fwlora"], times["lora"])[2])
    estimate = row["estimate"]
    assert estimate["kind"] == "ratio" and estimate["value"] == pytest.approx(ratio)
    assert estimate["se"] == pytest.approx(se_ratio)
    assert estimate["ci_low"] == pytest.approx(ratio - q * se_ratio)
    assert estimate["ci_high"] == pytest.approx(ratio + q * se_ratio)
    assert row["verdict"] == verdict


# ---------------------------------------------------------------- not comparable


def test_a_budget_without_runs_is_not_comparable(tmp_path):
    (row,) = check(family(tmp_path, CLOSE), claim(budget=0.2))
    assert row["verdict"] == NOT_COMPARABLE
    assert "No fwlora runs at 0.2%" in row["reason"] and "0.5%" in row["reason"]
    assert row["ours"]["fwlora"] is None


def test_a_method_without_runs_is_not_comparable(tmp_path):
    (row,) = check(family(tmp_path, CLOSE), claim(against="adalora"))
    assert row["verdict"] == NOT_COMPARABLE
    assert row["reason"] == "No adalora runs in this family."


def test_unavailable_energy_is_not_comparable(tmp_path):
    obj = family(tmp_path, FAR, energy_source="unavailable")
    (row,) = check(obj, claim(metric="energy_j_per_sample_net", comparison="better"))
    assert row["verdict"] == NOT_COMPARABLE
    assert "no energy counter on this machine" in row["reason"].lower()


def test_estimated_energy_is_compared(tmp_path):
    (row,) = check(family(tmp_path, FAR), claim(metric="energy_j_per_sample_net", tolerance=0.002))
    assert row["verdict"] == HOLDS  # both methods: 0.0105 J mean with the same spread


SEED_SETTING = {"model": "roberta-base", "dataset": "SST-2"}


def test_a_value_claim_from_another_model_is_not_comparable(tmp_path):
    value = claim(comparison="value", against=None, seed_values={"fwlora": 0.81}, seed_setting=SEED_SETTING)
    (row,) = check(family(tmp_path, CLOSE), value)
    assert row["verdict"] == NOT_COMPARABLE
    assert "another model: minilm here, roberta-base in the seed" in row["reason"].lower()
    assert "another dataset: rt here, sst-2 in the seed" in row["reason"].lower()


def test_a_value_claim_in_our_setting_is_checked_against_the_seed_value(tmp_path):
    obj = family(tmp_path, CLOSE)
    same = {"model": "MiniLM", "dataset": "RT"}  # case and punctuation do not matter
    near, far = check(obj, claim(comparison="value", seed_values={"fwlora": 0.81}, seed_setting=same, tolerance=0.05),
                      claim(comparison="value", seed_values={"fwlora": 0.95}, seed_setting=same, tolerance=0.05))
    assert near["verdict"] == HOLDS and far["verdict"] == FAILS
    q = student_t.ppf(0.975, 2)
    assert far["estimate"]["ci_high"] == pytest.approx(0.81 - 0.95 + q * 0.01 / math.sqrt(3))


def test_a_relation_from_another_setting_is_tested_here_with_a_note(tmp_path):
    seeded = claim(tolerance=0.03, seed_setting=SEED_SETTING, seed_values={"fwlora": 0.941, "lora": 0.931})
    (row,) = check(family(tmp_path, CLOSE), seeded)
    assert row["verdict"] == HOLDS
    assert row["setting_note"] == ("seed: roberta-base on SST-2; here: minilm on rt; "
                                   "the seed's absolute values are not comparable")
    assert row["seed_estimate"] == {"kind": "difference", "value": pytest.approx(0.01)}


# ---------------------------------------------------------------- outputs


def test_markdown_and_html_show_every_row(tmp_path):
    obj = family(tmp_path / "runs", FAR)
    claims = [claim(claim="FW-LoRA beats LoRA", comparison="better", seed_values={"fwlora": 0.941, "lora": 0.931}),
              claim(claim="FW-LoRA | LoRA at 0.2%", budget=0.2)]
    document = write_claims({"sentiment": (family_cfg(claims=claims), obj), "other": (family_cfg(), obj)},
                            tmp_path / "out")
    assert document["n_claims"] == 2 and list(document["families"]) == ["sentiment"]
    assert read_json(tmp_path / "out" / "claims.json") == document
    markdown = (tmp_path / "out" / "claims.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| sentiment |")]
    assert len(rows) == 2
    assert "FW-LoRA beats LoRA" in rows[0] and "| holds |" in rows[0]
    # accuracy in percent, 1 decimal: ours 81.0 +- 0.6%, seed 94.1% and 93.1%, seed difference +1.0 pp
    assert "fwlora 81.0 ± 0.6% (n=3)" in rows[0] and "fwlora 94.1%; lora 93.1%; Δ +1.0 pp" in rows[0]
    assert "Δ +10.0 pp [" in rows[0]
    assert "FW-LoRA \\| LoRA" in rows[1] and "| not comparable here |" in rows[1]
    page = (tmp_path / "out" / "claims.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert page.count("<tr>") == 3  # header and two claims
    assert '<td class="verdict holds">holds</td>' in page
    assert '<td class="verdict not-comparable-here">not comparable here</td>' in page


def test_ratio_cells_have_two_decimals(tmp_path):
    times = {"fwlora": [30.0, 31.0, 32.0], "lora": [40.0, 41.0, 42.0]}
    rows = check(family(tmp_path, CLOSE, train_time=times),
                 claim(metric="train_time_s", comparison="ratio_at_most", ratio=0.9, seed_values={"fwlora": 3, "lora": 4}))
    markdown = claims_markdown({"sentiment": rows})
    assert "ratio 0.76 [0.71, 0.81]" in markdown and "ratio 0.75" in markdown
    assert "fwlora 31.0 ± 0.6 s (n=3)" in markdown


def test_no_claims_anywhere_still_writes_the_files(tmp_path):
    obj = family(tmp_path / "runs", CLOSE)
    document = write_claims({"sentiment": (family_cfg(), obj)}, tmp_path / "out")
    assert document["n_claims"] == 0 and document["families"] == {}
    for name in ("claims.json", "claims.md", "claims.html"):
        assert "no claims declared" in (tmp_path / "out" / name).read_text()


# ---------------------------------------------------------------- schema


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _with_claim(raw: dict, **fields) -> dict:
    cfg = copy.deepcopy(raw)
    entry = {"claim": "LoRA matches AdaLoRA", "seed": "004", "metric": "accuracy", "budget": 0.5,
             "method": "lora", "against": "adalora", "comparison": "matches", "tolerance": 0.01, **fields}
    cfg["families"]["fwlora_rt"]["claims"] = [{k: v for k, v in entry.items() if v is not None}]
    return cfg


def test_a_valid_claim_passes_even_at_a_budget_the_family_does_not_run(raw):
    cfg = validate_config(_with_claim(raw, budget=0.1, seed_setting=SEED_SETTING, seed_values={"lora": 0.93}))
    assert cfg["families"]["fwlora_rt"]["claims"][0]["budget"] == 0.1
    assert 0.1 not in cfg["families"]["fwlora_rt"]["budgets"]


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"colour": "red"}, "families.fwlora_rt.claims.0.colour (unknown key)"),
        ({"comparison": "ratio_at_most", "tolerance": None}, "'ratio' is a required property"),
        ({"comparison": "better", "against": None}, "'against' is a required property"),
        ({"comparison": "value", "against": None, "tolerance": None}, "'tolerance' is a required property"),
        ({"comparison": "about"}, "families.fwlora_rt.claims.0.comparison"),
    ],
)
def test_the_schema_rejects_a_malformed_claim(raw, fields, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(_with_claim(raw, **fields))
    assert expected in str(info.value)


# ---------------------------------------------------------------- exact metrics, bound claims, modelled numbers

ENERGY_TABLE = {"source": "default", "reference": "test defaults", "j_per_flop": {"int8": 1e-13, "16bit": 7e-13}}


def metric_family(tmp_path, values: dict[str, dict[str, list]]) -> dict:
    """Runs of the given methods whose metrics include these values (one per seed; None: null)."""
    records = []
    n_seeds = max(len(v) for per_metric in values.values() for v in per_metric.values())
    for method, per_metric in values.items():
        for seed in range(n_seeds):
            metrics = classification_metrics(0.8, None) | {m: v[seed] for m, v in per_metric.items()}
            record = run_record("sentiment", method, seed, metrics, "unavailable")
            records.append(record | {"energy_table": ENERGY_TABLE})
    return aggregate_family("sentiment", write_records(tmp_path, records), family_cfg(methods=list(values)))


def params_claim(**fields) -> dict:
    return claim(**{"metric": "controller_params", "comparison": "ratio_at_most", "ratio": 0.1, "exact": True, **fields})


def test_an_exact_count_is_judged_from_a_single_seed(tmp_path):
    obj = metric_family(tmp_path, {"fwlora": {"controller_params": [5000]}, "lora": {"controller_params": [100000]}})
    holds, fails, interval = check(obj, params_claim(), params_claim(ratio=0.01), params_claim(exact=False))
    assert holds["verdict"] == HOLDS and holds["basis"] == "exact"
    assert holds["estimate"] == {"kind": "ratio", "value": 0.05, "basis": "exact", "se": 0.0, "ci_low": 0.05,
                                 "ci_high": 0.05}
    assert "is exact (fixed by the configuration; 1 fwlora seed and 1 lora seed agree)" in holds["reason"]
    assert fails["verdict"] == FAILS and "above the claimed bound 0.01" in fails["reason"]
    # The same count judged by an interval: n = 1 has none; the point value is still shown.
    assert interval["verdict"] == INCONCLUSIVE and interval["estimate"] is None
    assert interval["point_estimate"] == {"kind": "ratio", "value": pytest.approx(0.05)}
    assert "Point value: ratio 0.05 (claimed ≤ 0.10)." in interval["reason"]
    markdown = claims_markdown({"sentiment": [holds, interval]})
    assert "ratio 0.05 (exact)" in markdown and "ratio 0.05 (point value: no CI at n=1)" in markdown
    assert "(controller_params, ratio_at_most ≤ 0.10, budget 0.5%, exact)" in markdown
    assert "fwlora 5,000 (n=1); lora 100,000 (n=1)" in markdown


def test_an_exact_metric_whose_seeds_disagree_is_not_comparable(tmp_path):
    obj = metric_family(tmp_path, {"fwlora": {"controller_params": [5000, 5000, 5100]},
                                   "lora": {"controller_params": [100000, 100000, 100000]}})
    (row,) = check(obj, params_claim())
    assert row["verdict"] == NOT_COMPARABLE
    assert "marked exact, but the fwlora seeds disagree (seed 0: 5,000, seed 1: 5,000, seed 2: 5,100)" in row["reason"]


@pytest.mark.parametrize(
    "fields, verdict",
    [
        ({"comparison": "matches", "tolerance": 10.0}, HOLDS),  # 5000 vs 5010
        ({"comparison": "matches", "tolerance": 1.0}, FAILS),
        ({"comparison": "better"}, HOLDS),  # fewer parameters is better
        ({"comparison": "better", "method": "lora", "against": "fwlora"}, FAILS),
        ({"comparison": "value", "tolerance": 0.0, "seed_values": {"fwlora": 5000}}, HOLDS),
        ({"comparison": "value", "tolerance": 0.0, "seed_values": {"fwlora": 4000}}, FAILS),
    ],
)
def test_exact_comparisons_reach_both_verdicts(tmp_path, fields, verdict):
    obj = metric_family(tmp_path, {"fwlora": {"controller_params": [5000, 5000]},
                                   "lora": {"controller_params": [5010, 5010]}})
    exact = claim(metric="controller_params", exact=True, seed_setting={"model": "minilm", "dataset": "rt"}) | fields
    (row,) = check(obj, exact)
    assert row["verdict"] == verdict and row["estimate"]["basis"] == "exact"


def cap_claim(**fields) -> dict:
    return {"claim": "never exceeds the cap", "seed": "000", "metric": "e_max_worst_ratio", "budget": 0.5,
            "method": "fwlora", "comparison": "at_most", "limit": 1.0, **fields}


@pytest.mark.parametrize(
    "values, verdict, worst, said",
    [
        ([0.90, 0.95, 0.99], HOLDS, 0.99, "Every fwlora seed is within the limit: e_max_worst_ratio 0.99 (seed 2"),
        ([0.90, 1.02, 0.80], FAILS, 1.02, "Seed 1 of fwlora exceeds the limit: e_max_worst_ratio 1.02 > 1"),
        ([0.90, None, 0.95], INCONCLUSIVE, 0.95, "fwlora seed(s) [1] have no e_max_worst_ratio value"),
    ],
)
def test_at_most_is_judged_on_the_worst_seed(tmp_path, values, verdict, worst, said):
    obj = metric_family(tmp_path, {"fwlora": {"e_max_worst_ratio": values}, "lora": {}})
    (row,) = check(obj, cap_claim())
    assert row["verdict"] == verdict and said in row["reason"]
    assert row["basis"] == "every seed" and row["estimate"]["value"] == worst and row["estimate"]["kind"] == "max"
    assert row["modelled"] and "Modelled numbers: priced by the energy table (default), not measured." in row["reason"]
    assert list(row["ours"]) == ["fwlora"] and row["against"] is None


def test_at_most_without_any_value_is_not_comparable(tmp_path):
    obj = metric_family(tmp_path, {"fwlora": {"e_max_worst_ratio": [None, None]}, "lora": {}})
    (row,) = check(obj, cap_claim())
    assert row["verdict"] == NOT_COMPARABLE and "unavailable (null) in every fwlora run" in row["reason"]


LONG = {"fwlora": {"modelled_adapter_j_long_sample": [2.0e-3, 2.4e-3, 2.2e-3]},
        "lora": {"e_max_j": [1.0e-3, 1.0e-3, 1.0e-3]}}


def overshoot(**fields) -> dict:
    return {"claim": "fwlora overshoots lora's cap", "seed": "000", "metric": "modelled_adapter_j_long_sample",
            "budget": 0.5, "method": "fwlora", "against": "lora", "against_metric": "e_max_j",
            "comparison": "ratio_at_least", "ratio": 1.8, **fields}


@pytest.mark.parametrize("bound, verdict", [(1.8, HOLDS), (2.0, HOLDS), (2.1, FAILS)])
def test_ratio_at_least_divides_by_another_metric_seed_by_seed(tmp_path, bound, verdict):
    (row,) = check(metric_family(tmp_path, LONG), overshoot(ratio=bound))
    assert row["verdict"] == verdict
    assert row["estimate"]["value"] == pytest.approx(2.0) and row["estimate"]["seed"] == 0
    assert row["estimate"]["per_seed"] == {"0": pytest.approx(2.0), "1": pytest.approx(2.4), "2": pytest.approx(2.2)}
    assert list(row["ours"]) == ["fwlora", "lora e_max_j"] and row["modelled"]
    markdown = claims_markdown({"sentiment": [row]})
    assert "ratio 2.00 (smallest of 3 seeds)" in markdown
    assert f"(modelled_adapter_j_long_sample / e_max_j, ratio_at_least ≥ {bound:.2f}, budget 0.5%, MODELLED" in markdown
    assert "fwlora 2.2 ± 0.1155 mJ (n=3); lora e_max_j 1 ± 0 mJ (n=3)" in markdown
    if verdict == FAILS:
        assert "Seed 0: fwlora modelled_adapter_j_long_sample / lora e_max_j = 2.00, below the claimed 2.10" in row["reason"]


def test_ratio_at_least_with_a_missing_seed_or_a_zero_denominator(tmp_path):
    missing = {**LONG, "fwlora": {"modelled_adapter_j_long_sample": [2.0e-3, None, 2.2e-3]}}
    (row,) = check(metric_family(tmp_path / "a", missing), overshoot())
    assert row["verdict"] == INCONCLUSIVE and "seed(s) [1] lack one of the two values" in row["reason"]
    zero = {**LONG, "lora": {"e_max_j": [1.0e-3, 0.0, 1.0e-3]}}
    (row,) = check(metric_family(tmp_path / "b", zero), overshoot())
    assert row["verdict"] == NOT_COMPARABLE and "lora's e_max_j is 0 in seed 1" in row["reason"]


def test_claims_on_modelled_numbers_say_so_and_measured_ones_need_a_counter(tmp_path):
    obj = metric_family(tmp_path, {"fwlora": {"modelled_j_per_sample": [0.010, 0.011, 0.012]},
                                   "lora": {"modelled_j_per_sample": [0.020, 0.021, 0.022]}})
    modelled, measured = check(obj, claim(metric="modelled_j_per_sample", comparison="ratio_at_most", ratio=0.7),
                               claim(metric="energy_j_per_sample", comparison="ratio_at_most", ratio=0.7))
    assert modelled["verdict"] == HOLDS and modelled["modelled"] and modelled["energy_table"] == "default"
    assert modelled["reason"].endswith("Modelled numbers: priced by the energy table (default), not measured.")
    assert measured["verdict"] == NOT_COMPARABLE and not measured["modelled"] and measured["energy_table"] is None
    assert "No energy counter on this machine" in measured["reason"]
    markdown = claims_markdown({"sentiment": [modelled, measured]})
    assert "budget 0.5%, MODELLED (energy table: default), not measured)" in markdown
    assert "fwlora 11 ± 0.5774 mJ (n=3); lora 21 ± 0.5774 mJ (n=3)" in markdown


def test_joules_and_small_numbers_are_readable():
    from wattpeft.report.claims import format_value

    assert format_value("modelled_j_per_sample", 0.0209) == "20.9 mJ"
    assert format_value("e_max_j", 1.0616e-4) == "106.2 µJ"
    assert format_value("energy_j_per_sample", 1.5) == "1.5 J"
    assert format_value("modelled_adapter_j_per_sample", 0.0) == "0 J"
    assert format_value("e_max_worst_ratio", 0.99976) == "0.9998"
    assert format_value("adapter_flop_share", 0.0068) == "0.0068"


def test_the_spectral_claims_on_spectral_runs(tmp_path, raw):
    """config.yaml's seeds 000/001 claims against a synthetic spectral family (2 seeds)."""
    from test_report import spectral_family

    cfg = validate_config(raw)["families"]["spectral"]
    rows = check_claims("spectral", cfg, spectral_family(tmp_path))
    assert [row["metric"] for row in rows] == [
        "rougeL", "energy_j_per_sample", "modelled_j_per_sample", "modelled_adapter_j_per_sample", "latency_p99_ms",
        "controller_params", "e_max_worst_ratio", "modelled_adapter_j_long_sample"]
    verdicts = [row["verdict"] for row in rows]
    assert verdicts[1] == NOT_COMPARABLE and "No energy counter" in rows[1]["reason"]
    assert verdicts[5:] == [HOLDS, HOLDS, HOLDS]  # exact count; cap held in both seeds; 5.66 mJ / 0.106 mJ >= 1.8
    assert [row["modelled"] for row in rows] == [False, False, True, True, False, False, True, True]
    assert all(row["setting_note"].startswith("seed: Llama-2-7B-chat on CNN/DailyMail") for row in rows)
    assert all(row["seed_setting"] == {"model": "Llama-2-7B-chat", "dataset": "CNN/DailyMail"} for row in rows)


# ---------------------------------------------------------------- schema and checks of the new fields


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"comparison": "at_most", "against": None, "tolerance": None}, "'limit' is a required property"),
        ({"comparison": "ratio_at_least", "tolerance": None}, "'ratio' is a required property"),
        ({"comparison": "ratio_at_least", "against": None, "ratio": 1.8}, "'against' is a required property"),
        ({"exact": "yes"}, "families.fwlora_rt.claims.0.exact"),
        ({"limit": "one"}, "families.fwlora_rt.claims.0.limit"),
        # beyond the schema (checks.py): fields a comparison would ignore, unknown metrics
        ({"against_metric": "mcc"}, "families.fwlora_rt.claims[0].against_metric: only a ratio"),
        ({"limit": 1.0}, "families.fwlora_rt.claims[0].limit: only at_most and at_least have a limit"),
        ({"comparison": "at_most", "limit": 1.0, "tolerance": None}, "families.fwlora_rt.claims[0].against: at_most bounds"),
        ({"comparison": "ratio_at_least", "ratio": 1.8, "against_metric": "e_max"},
         "families.fwlora_rt.claims[0].against_metric: 'e_max' is not a metric"),
    ],
)
def test_new_claim_fields_are_validated_naming_the_field(raw, fields, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(_with_claim(raw, **fields))
    assert expected in str(info.value)


def test_new_comparisons_on_modelled_metrics_validate(raw):
    cross = _with_claim(raw, comparison="ratio_at_least", ratio=1.8, tolerance=None,
                        metric="modelled_adapter_j_long_sample", against_metric="e_max_j")
    cap = _with_claim(raw, comparison="at_most", limit=1.0, against=None, tolerance=None, metric="e_max_worst_ratio")
    own = _with_claim(raw, comparison="ratio_at_most", ratio=1.0, tolerance=None, against="lora",
                      metric="modelled_adapter_j_long_sample", against_metric="e_max_j")  # one method, two metrics
    count = _with_claim(raw, comparison="ratio_at_most", ratio=0.1, tolerance=None, metric="controller_params", exact=True)
    for cfg in (cross, cap, own, count):
        validate_config(cfg)


def test_a_surrogate_error_reads_in_percent_not_in_its_targets_unit():
    from wattpeft.report.claims import format_value

    assert format_value("surrogate_mape_energy_j", 32.8251) == "32.8%"  # a MAPE, not joules
    assert format_value("surrogate_mape_latency_ms", 2.4, diff=True) == "+2.4 pp"
    assert format_value("surrogate_within_10pct_peak_power_w", 0.175) == "17.5%"
