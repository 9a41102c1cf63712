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


# --- The real wandb (the dev extra installs it), offline, in a process of its own ---

OFFLINE_MIRROR = """
import json, sys
from wattpeft.training.tracking import mirror_to_wandb
run, log, summary = (json.loads(a) for a in sys.argv[1:4])
assert mirror_to_wandb(run, log, summary)
"""


def wandb_records(path):
    """The records of an offline run's .wandb file: W&B's LevelDB-style log (a 7-byte
    ':W&B' header, then 32 KiB blocks of crc32/length/type-framed chunks) of protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        pending, pos = pending + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_the_real_wandb_writes_an_offline_run_without_the_network(tmp_path):
    import json
    import os
    import subprocess
    import time
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "config"),
        WANDB_CACHE_DIR=str(tmp_path / "cache"), WANDB_DATA_DIR=str(tmp_path / "data"), WANDB_ERROR_REPORTING="false",
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens: an attempt to upload could reach nothing
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]),
    )
    run = {**RUN, "wandb": {"mode": "offline", "project": "wattpeft-test"}}
    summary = {"train_time_s": 3.5, "steps": 10, "run_id": RUN["run_id"], "method_stats": {"not": "a scalar"}}
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", OFFLINE_MIRROR, *(json.dumps(x) for x in (run, LOG, summary))],
                   env=env, check=True, timeout=120)
    elapsed = time.monotonic() - started
    [folder] = (tmp_path / "wandb").glob("offline-run-*")
    [store] = folder.glob("run-*.wandb")
    assert store.name == f"run-{folder.name.rsplit('-', 1)[1]}.wandb"
    records = list(wandb_records(store))
    [header] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.display_name, header.run_group, header.project) == (RUN["run_id"], RUN["group_id"], "wattpeft-test")
    written = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            written.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
    assert {k: written[k] for k in ("train_time_s", "steps", "run_id")} == {"train_time_s": 3.5, "steps": 10, "run_id": RUN["run_id"]}
    assert "method_stats" not in written  # only scalars reach the summary
    history = [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], {k: v for k, v in h.items() if not k.startswith("_")}) for h in history] == [
        (5, {"train/epoch": 0, "train/loss": 0.7}), (10, {"validation/epoch": 0, "validation/accuracy": 0.8})]
    assert elapsed < 60, f"the offline run took {elapsed:.1f} s"
