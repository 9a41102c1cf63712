"""The optional W&B mirror: nothing when disabled, a clear error when asked but absent,
and a faithful replay of the local log when present."""

import sys
import types

import pytest

from wattpeft.training.tracking import mirror_to_wandb

RUN = {"run_id": "f--lora--b1--s0", "group_id": "f--lora--b1"}
LOG = [{"step": 5, "epoch": 0, "loss": 0.7}, {"step": 10, "epoch": 0, "split": "validation", "accuracy": 0.8}]


def test_disabled_logs_nothing_and_imports_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # an import would raise
    assert mirror_to_wandb({**RUN, "wandb": {"mode": "disabled"}}, LOG, {}) is False


def test_asked_but_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError, match="wandb is not installed"):
        mirror_to_wandb({**RUN, "wandb": {"mode": "offline"}}, LOG, {})


def test_offline_mode_replays_the_log(monkeypatch):
    calls = {"log": [], "summary": {}, "finished": False}

    class FakeRun:
        summary = calls["summary"]

        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kwargs: calls.setdefault("init", kwargs) and FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert mirror_to_wandb({**RUN, "wandb": {"mode": "offline", "project": "p"}}, LOG, {"train_time_s": 3.5})
    assert calls["init"]["mode"] == "offline" and calls["init"]["name"] == RUN["run_id"]
    assert calls["log"] == [(5, {"train/epoch": 0, "train/loss": 0.7}), (10, {"validation/epoch": 0, "validation/accuracy": 0.8})]
    assert calls["summary"] == {"train_time_s": 3.5} and calls["finished"]


def test_the_mirror_rule_writes_a_receipt_from_the_local_files(tmp_path, monkeypatch):
    import json

    from wattpeft.stages.finetune import run_wandb_mirror

    monkeypatch.setitem(sys.modules, "wandb", None)
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in LOG))
    (tmp_path / "summary.json").write_text('{"train_time_s": 1.0}')
    receipt = run_wandb_mirror({**RUN, "wandb": {"mode": "disabled"}}, log, tmp_path / "summary.json", tmp_path / "r.json")
    assert receipt == {"run_id": RUN["run_id"], "mirrored": False, "wandb": {"mode": "disabled"}, "records": 2}
    assert json.loads((tmp_path / "r.json").read_text()) == receipt
