"""Which results a failed job makes stale, and that they are removed."""

from pathlib import Path

import yaml

from wattpeft.config import validate_config
from wattpeft.stages.invalidate import affected_runs, invalidate_downstream

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "config.yaml").read_text())
CFG = validate_config(RAW)


def run_ids(rule, **wildcards):
    return sorted(key.run_id for key in affected_runs(rule, wildcards, CFG))


def test_a_run_level_job_affects_only_its_run():
    assert run_ids("finetune", run="sentiment--lora--b0.5--s1") == ["sentiment--lora--b0.5--s1"]


def test_search_affects_every_seed_of_its_group():
    assert run_ids("search", group="sentiment--adalora--b0.5") == [
        f"sentiment--adalora--b0.5--s{s}" for s in (0, 1, 2)
    ]


def test_data_and_assets_affect_the_families_that_use_them():
    assert len(run_ids("tokenise", dataset="rt_sentiment", model="minilm")) == 6
    assert run_ids("dataset_asset", asset="aclsum") == ["summarisation--lora--b0.1--s0"]
    assert run_ids("model_asset", model="smollm2") == ["summarisation--lora--b0.1--s0"]
    assert run_ids("aggregate_family", family="sentiment") == []


def test_invalidation_removes_leaves_and_aggregates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keep = Path("results/runs/sentiment--lora--b0.5--s0/metrics.json")
    stale = [
        Path("results/runs/summarisation--lora--b0.1--s0/metrics.json"),
        Path("results/comparison/summarisation/aggregated_metrics.json"),
        Path("results/comparison/aggregated_metrics.json"),
    ]
    for path in [keep, *stale]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    removed = invalidate_downstream("tokenise", {"dataset": "aclsum", "model": "smollm2"}, RAW)
    assert sorted(removed) == sorted(stale)
    assert keep.exists() and not any(p.exists() for p in stale)
