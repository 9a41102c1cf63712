"""Job records, and what a failed job makes stale: the DAG that ran, not a list of rules."""

from pathlib import Path

from wattpeft.stages.invalidate import (
    downstream_outputs,
    invalidate_downstream,
    new_record,
    read_records,
    write_record,
)

CHAIN = [  # (rule, wildcards, inputs, outputs): a run's chain, its family report and a figure
    ("tokenise", {"dataset": "d"}, ["resources/models/m"], ["results/data/d/m"]),
    ("finetune", {"run": "f--lora--b1--s0"}, ["results/data/d/m"], ["results/runs/r/adapter", "results/runs/r/train_log.jsonl"]),
    ("harden", {"run": "f--lora--b1--s0"}, ["results/runs/r/adapter"], ["results/exports/r"]),
    ("evaluate", {"run": "f--lora--b1--s0"}, ["results/exports/r", "results/data/d/m"], ["results/runs/r/metrics.json"]),
    ("learning_curve", {"run": "f--lora--b1--s0"}, ["results/runs/r/train_log.jsonl"], ["results/runs/r/learning_curve.png"]),
    ("aggregate_family", {"family": "f"}, ["results/runs/r/metrics.json"], ["results/comparison/f/aggregated_metrics.json"]),
    ("figure_latency", {"family": "f"}, ["results/comparison/f/aggregated_metrics.json"], ["results/comparison/f/latency.png"]),
    ("brand_new_rule", {"family": "f"}, ["results/comparison/f/aggregated_metrics.json"], ["results/comparison/f/new.json"]),
]


def finished_jobs(tmp_path: Path) -> Path:
    jobs = tmp_path / "logs/jobs"
    for rule, wildcards, inputs, outputs in CHAIN:
        record = new_record(rule, wildcards, inputs, outputs)
        record["status"] = "ok"
        write_record(record, jobs)
        for out in outputs:
            (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / out).write_text("x")
    return jobs


def test_records_round_trip_one_per_job(tmp_path):
    jobs = finished_jobs(tmp_path)
    write_record({**new_record("harden", {"run": "f--lora--b1--s0"}, [], []), "status": "ok"}, jobs)
    records = read_records(jobs)
    assert len(records) == len(CHAIN)  # a rerun replaces its job's record
    assert {r["rule"] for r in records} == {c[0] for c in CHAIN}


def test_downstream_follows_the_recorded_dag_including_rules_added_later(tmp_path):
    records = read_records(finished_jobs(tmp_path))
    stale = downstream_outputs(["results/data/d/m"], records)
    assert "results/runs/r/metrics.json" in stale and "results/exports/r" in stale
    assert "results/comparison/f/new.json" in stale  # a rule no list ever named
    assert "results/data/d/m" not in stale


def test_a_failing_figure_or_learning_curve_removes_nothing(tmp_path, monkeypatch):
    jobs = finished_jobs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert invalidate_downstream("figure_latency", ["results/comparison/f/latency.png"], jobs) == []
    assert invalidate_downstream("learning_curve", ["results/runs/r/learning_curve.png"], jobs) == []
    assert Path("results/runs/r/metrics.json").exists()


def test_a_failing_run_job_removes_its_downstream_and_nothing_upstream(tmp_path, monkeypatch):
    jobs = finished_jobs(tmp_path)
    monkeypatch.chdir(tmp_path)
    removed = invalidate_downstream("harden", ["results/exports/r"], jobs)
    assert sorted(map(str, removed)) == sorted([
        "results/runs/r/metrics.json", "results/comparison/f/aggregated_metrics.json",
        "results/comparison/f/latency.png", "results/comparison/f/new.json",
    ])
    assert Path("results/runs/r/adapter").exists() and Path("results/runs/r/learning_curve.png").exists()


def test_failed_or_running_jobs_are_not_edges(tmp_path):
    jobs = tmp_path / "jobs"
    write_record(new_record("evaluate", {"run": "x"}, ["a"], ["b"]), jobs)  # still running
    assert downstream_outputs(["a"], read_records(jobs)) == []
