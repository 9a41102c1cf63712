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
