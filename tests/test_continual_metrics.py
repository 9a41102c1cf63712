"""Continual-learning metrics from the accuracy matrix (wattpeft.evaluation.continual), their
directions, the task-stream figures (wattpeft.report.continual) and claims on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import write_records

from wattpeft.evaluation.continual import continual_metrics, retained_auc, retained_curve
from wattpeft.report import aggregate_family, make_figure, metric_direction
from wattpeft.report.claims import FAILS, HOLDS, claims_markdown, check_claims, format_value

# Task 0 rose after its own training (0.80 -> 0.90 after task 1), then fell to 0.60: the two
# forgetting definitions differ on it (max-then-last 30 pp, first-then-last 20 pp).
R = [[0.80, 0.10, 0.10],
     [0.90, 0.70, 0.20],
     [0.60, 0.60, 0.90]]  # fmt: skip
PNG_MAGIC, PDF_MAGIC = b"\x89PNG", b"%PDF"


# ---------------------------------------------------------------- metrics


def test_forgetting_definitions_differ_where_a_task_peaked_after_its_own_training():
    metrics = continual_metrics(R)
    assert metrics["forgetting_max_pp"] == pytest.approx((30 + 10) / 2)  # max(0.8, 0.9) - 0.6; 0.7 - 0.6
    assert metrics["forgetting_first_pp"] == pytest.approx((20 + 10) / 2)  # 0.8 - 0.6; 0.7 - 0.6
    assert metrics["bwt_pp"] == pytest.approx(-15.0)  # (0.6 - 0.8 + 0.6 - 0.7) / 2
    assert metrics["average_accuracy"] == pytest.approx(0.7)
    assert "fwt_pp" not in metrics


def test_retained_curve_and_its_auc_normalised_by_the_width():
    assert retained_curve(R) == pytest.approx([0.8, 0.8, 0.7])  # 0.8; (0.9 + 0.7) / 2; (0.6 + 0.6 + 0.9) / 3
    # Trapezoids (0.8 + 0.8) / 2 + (0.8 + 0.7) / 2 = 1.55 over the width T - 1 = 2.
    assert continual_metrics(R)["retained_auc"] == pytest.approx(0.775)
    assert retained_auc([1.0, 1.0, 1.0, 1.0]) == pytest.approx(1.0)  # a flat curve: its height, in [0, 1]
    assert retained_auc([0.4]) == pytest.approx(0.4)


def test_a_single_task_has_no_backward_metrics():
    metrics = continual_metrics([[0.5]], reference=[0.3])
    assert metrics["average_accuracy"] == 0.5 and metrics["retained_auc"] == 0.5
    for name in ("bwt_pp", "forgetting_max_pp", "forgetting_first_pp", "fwt_pp"):
        assert name in metrics and metrics[name] is None  # undefined, not 0


def test_forward_transfer_against_the_bare_backbone():
    metrics = continual_metrics(R, reference=[0.1, 0.05, 0.1])
    assert metrics["fwt_pp"] == pytest.approx((5 + 10) / 2)  # R[0][1] - 0.05, R[1][2] - 0.1
    assert continual_metrics(R, reference=[0.1, None, 0.1])["fwt_pp"] is None
    with pytest.raises(ValueError, match="one per task"):
        continual_metrics(R, reference=[0.1, 0.1])


def test_a_matrix_that_is_not_square_is_refused():
    with pytest.raises(ValueError, match="T x T"):
        continual_metrics([[0.5, 0.4]])


def test_directions_of_the_stream_metrics():
    for name in ("average_accuracy", "retained_auc", "bwt_pp", "fwt_pp"):
        assert metric_direction(name) == "maximize", name
    for name in ("forgetting_max_pp", "forgetting_first_pp", "extra_memory_mb", "cpu_latency_overhead_pct",
                 "energy_j_per_task"):
        assert metric_direction(name) == "minimize", name


# ---------------------------------------------------------------- a stream family

TASKS = ["rt_t2t", "tweets_t2t", "xsum_t2t"]
STREAM_FAMILY = {
    "model": "smollm2", "primary_metric": {"name": "retained_auc", "direction": "maximize"},
    "methods": {"himalaya": {"role": "proposed"}, "lilac": {"role": "baseline"}}, "budgets": [0.5], "seeds": [0, 1],
}
# Per method: its accuracy matrices (one per seed), forgetting and deployment costs apart.
MATRICES = {
    "himalaya": [[[0.80, 0.10, 0.10], [0.79, 0.70, 0.20], [0.79, 0.69, 0.30]],
                 [[0.82, 0.10, 0.10], [0.81, 0.72, 0.20], [0.805, 0.71, 0.32]]],
    "lilac": [R, [[0.82, 0.12, 0.10], [0.90, 0.72, 0.22], [0.64, 0.62, 0.92]]],
}
COSTS = {"himalaya": {"extra_memory_mb": [2.1, 2.3], "cpu_latency_overhead_pct": [6.2, 6.8]},
         "lilac": {"extra_memory_mb": [3.4, 3.4], "cpu_latency_overhead_pct": [9.0, 9.5]}}


def continual_section(matrix: list, seed: int) -> dict:
    steps_per_task = 8
    norms = [{"step": step, "task": (step - 1) // steps_per_task, "norm": 0.05 * step + 0.01 * seed}
             for step in range(2, 3 * steps_per_task + 1, 2)]
    return {
        "tasks": TASKS, "task_metrics": ["accuracy", "accuracy", "rougeL"], "accuracy_matrix": matrix,
        "reference_scores": [0.5, 0.1, 0.05], "adapter_norm": norms,
        "task_end_steps": [steps_per_task * (i + 1) for i in range(3)],
        "latency": {"backbone_ms": 10.1, "adapter_ms": 10.9, "overhead_pct": 7.9, "threads": 1,
                    "label": "host CPU, not a Raspberry Pi"},
        "extra_memory_bytes": 2_200_000, "energy_j_per_task": [None, None, None], "energy_source": "unavailable",
    }


def stream_record(method: str, seed: int) -> dict:
    group_id = f"stream--{method}--b0.5"
    matrix = MATRICES[method][seed]
    metrics = continual_metrics(matrix, [0.5, 0.1, 0.05]) | {m: v[seed] for m, v in COSTS[method].items()}
    return {
        "run_id": f"{group_id}--s{seed}", "group_id": group_id, "family": "stream", "method": method,
        "role": STREAM_FAMILY["methods"][method]["role"], "model": "smollm2", "dataset": "stream", "budget": 0.5,
        "seed": seed, "mode": "full", "task": "stream", "metrics": metrics | {"energy_j_per_task": None},
        "energy_source": "unavailable", "hardware": {"device": "cpu-test"}, "config_hash": f"c{seed}",
        "data_hash": "d", "continual": continual_section(matrix, seed),
    }


def write_family(root: Path, records: list[dict], name: str, cfg: dict) -> dict:
    return aggregate_family(name, write_records(root, records), cfg)


@pytest.fixture()
def stream(tmp_path) -> dict:
    records = [stream_record(method, seed) for method in MATRICES for seed in (0, 1)]
    return write_family(tmp_path / "runs", records, "stream", STREAM_FAMILY)


def test_the_continual_section_reaches_the_aggregate_and_is_not_a_metric(stream):
    run = stream["runs"]["stream--lilac--b0.5--s0"]
    assert run["continual"]["accuracy_matrix"] == R and run["continual"]["tasks"] == TASKS
    assert "continual" not in stream["summary"] and "accuracy_matrix" not in stream["summary"]
    assert stream["summary"]["forgetting_max_pp"]["stream--lilac--b0.5"]["mean"] == pytest.approx(
        (20.0 + continual_metrics(MATRICES["lilac"][1])["forgetting_max_pp"]) / 2)
    assert stream["metric_directions"]["forgetting_first_pp"] == "minimize"
    assert stream["metric_directions"]["retained_auc"] == "maximize"
    assert stream["best_proposed"]["method"] == "himalaya"


def _texts(fig) -> str:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [t.get_text() for t in (*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label)]
        texts += [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend else []
    return " ".join(" ".join(texts).split())


def _draw(kind: str, family: str, family_obj: dict) -> tuple[str, str | None]:
    from matplotlib.figure import Figure

    from wattpeft.report.figures import FIGURES

    fig = Figure()
    note = FIGURES[kind](fig, family, family_obj)
    return _texts(fig), note


@pytest.mark.parametrize("kind", ["retained_accuracy", "accuracy_matrix", "adapter_norm"])
def test_stream_figures_draw_and_a_family_without_a_stream_says_no_data(stream, tmp_path, kind):
    paths = make_figure(kind, "stream", stream, tmp_path / kind)
    assert [p.read_bytes()[:4] for p in paths] == [PDF_MAGIC, PNG_MAGIC]
    text, note = _draw(kind, "stream", stream)
    assert "no data" not in text and note
    assert "himalaya [proposed]" in text and "lilac [baseline]" in text
    if kind == "retained_accuracy":
        assert "rt_t2t (accuracy)" in text and "xsum_t2t (rougeL)" in text and "AUC 0.783, n=2" in text
        assert "retained accuracy a_i" in text and "divided by T - 1" in note
    elif kind == "accuracy_matrix":
        assert "after 1: rt_t2t" in text and "task j (score metric)" in text and "0.81" in text  # (0.80 + 0.82) / 2
        assert "task metrics: accuracy, rougeL" in note
    else:
        assert "global optimiser step" in text and all(task in text for task in TASKS)

    records = [stream_record(method, seed) for method in MATRICES for seed in (0, 1)]
    for record in records:
        del record["continual"]
    plain = write_family(tmp_path / "plain", records, "stream", STREAM_FAMILY)
    make_figure(kind, "stream", plain, tmp_path / f"{kind}-empty")
    text, note = _draw(kind, "stream", plain)
    assert "no data" in text and "has no continual runs" in text and note is None


# ---------------------------------------------------------------- claims


def claim(**fields) -> dict:
    return {"claim": "HIMALAYA forgets at most 1.5 pp", "seed": "003", "metric": "forgetting_max_pp",
            "budget": 0.5, "method": "himalaya", "comparison": "at_most", "limit": 1.5, **fields}


def test_claims_on_forgetting_memory_and_latency(stream):
    claims = [
        claim(),
        claim(claim="HIMALAYA forgets less than LILAC", comparison="better", against="lilac", limit=None),
        claim(claim="LILAC forgets at least 5 pp", method="lilac", comparison="at_least", limit=5.0),
        claim(claim="LILAC forgets at least 25 pp", method="lilac", comparison="at_least", limit=25.0),
        claim(claim="2.5 MB extra", metric="extra_memory_mb", limit=2.5),
        claim(claim="latency overhead at most 7% (host CPU, not a Raspberry Pi)", metric="cpu_latency_overhead_pct",
              limit=7.0),
    ]
    rows = check_claims("stream", STREAM_FAMILY | {"claims": claims}, stream)
    cap, better, at_least, too_much, memory, latency = rows
    assert cap["verdict"] == HOLDS and cap["estimate"]["kind"] == "max"
    assert cap["estimate"]["value"] == pytest.approx(1.25)  # seed 1: (1.5 + 1) / 2 pp
    assert "1.25 pp (seed 1, the largest of 2 seeds) ≤ 1.50 pp" in cap["reason"]
    assert better["direction"] == "minimize" and better["verdict"] in (HOLDS, "inconclusive at this n")
    assert better["estimate"]["value"] > 0  # lower forgetting is better: himalaya ahead
    assert at_least["verdict"] == HOLDS and at_least["estimate"]["kind"] == "min"
    assert "≥ 5.00 pp" in at_least["reason"]
    assert too_much["verdict"] == FAILS and "falls below the limit" in too_much["reason"]
    assert memory["verdict"] == HOLDS and "2.300 MB" in memory["reason"]
    assert latency["verdict"] == HOLDS and "6.80%" in latency["reason"]
    markdown = claims_markdown({"stream": rows})
    assert "(forgetting_max_pp, at_most ≤ 1.50 pp, budget 0.5%)" in markdown
    assert "(forgetting_max_pp, at_least ≥ 5.00 pp, budget 0.5%)" in markdown
    assert "min " in markdown and "max 6.80% (2 seeds)" in markdown


def test_units_of_the_stream_metrics():
    assert format_value("forgetting_max_pp", 1.234) == "1.23 pp"
    assert format_value("bwt_pp", -2.0, diff=True) == "-2.00 pp"
    assert format_value("cpu_latency_overhead_pct", 7.0) == "7.00%"
    assert format_value("cpu_latency_overhead_pct", 0.5, diff=True) == "+0.50 pp"
    assert format_value("retained_auc", 0.775) == "77.5%"
    assert format_value("extra_memory_mb", 2.3) == "2.300 MB"
