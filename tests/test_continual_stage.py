"""The stream stage on a tiny decoder: tasks in order with a snapshot after each, a killed
stream resuming at the task and step where it stopped with the same result, and one
accuracy matrix scored from the snapshots (stages/continual.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from wattpeft.assets import build_tiny_model
from wattpeft.config import config_view, resolve_run_config, validate_config
from wattpeft.data.tokenise import tokenise_dataset
from wattpeft.stages import continual
from wattpeft.training import trainer as trainer_module

ROOT = Path(__file__).resolve().parents[1]
RUN = "stream--{method}--b1--s0"


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """(config, model dir, data dirs) of .test/continual.yaml's stream, tokenised, fp32."""
    root = tmp_path_factory.mktemp("stream")
    raw = yaml.safe_load((ROOT / ".test" / "continual.yaml").read_text())
    raw["families"]["stream"].pop("backbone_precision")  # fp32: the resume test compares exactly
    cfg = validate_config(raw, base_dir=ROOT)
    model_dir = root / "model"
    build_tiny_model(cfg["models"]["tiny_llama"], model_dir)
    data_dirs = []
    for name in cfg["families"]["stream"]["stream"]["tasks"]:
        spec = {**cfg["datasets"][name], "path": str(ROOT / cfg["datasets"][name]["path"])}
        tokenise_dataset(name, spec, model_dir, root / "data" / name, root / "resources")
        data_dirs.append(root / "data" / name)
    return cfg, model_dir, data_dirs


def train(cfg, model_dir, data_dirs, run_dir: Path, method: str) -> dict:
    run_cfg = config_view(resolve_run_config(cfg, RUN.format(method=method)), "train")
    out = {"snapshots": run_dir / "snapshots", "summary": run_dir / "train_summary.json",
           "log": run_dir / "train_log.jsonl", "config": run_dir / "config.json"}
    continual.run_stream_finetune(run_cfg, data_dirs, model_dir, run_dir, out, progress=False)
    return run_cfg


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    snapshot = run_dir / "snapshots" / continual.SNAPSHOT.format(2)
    return {f"{f.name}/{k}": v for f in sorted(snapshot.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("method", ["lora_ewc", "himalaya"])
def test_a_killed_stream_resumes_at_its_task_and_step_with_the_same_result(stream, tmp_path, monkeypatch, method):
    cfg, model_dir, data_dirs = stream
    whole = tmp_path / "whole"
    train(cfg, model_dir, data_dirs, whole, method)

    # Kill the second run in its last task's second step, after that task's first checkpoint.
    real_step = trainer_module.Trainer._optimizer_step

    def dying_step(self, accelerator, optimizer, scheduler, group, position):
        if "[3/3" in self.cfg["run_id"] and position.step == 1:
            raise KeyboardInterrupt("killed")
        return real_step(self, accelerator, optimizer, scheduler, group, position)

    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", dying_step)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, model_dir, data_dirs, killed, method)
    assert not (killed / "train_summary.json").exists()
    root = next((killed / "checkpoints").iterdir())
    assert sorted(p.name for p in (root / "stream").iterdir()) == ["task-00.pt", "task-01.pt"]
    assert (root / "task-02" / "LATEST").exists()  # the trainer's checkpoint inside task 3
    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", real_step)
    train(cfg, model_dir, data_dirs, killed, method)

    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["resumed_after_task"] == 2 and summary["tasks"][-1]["resumed_from_step"] == 1
    a, b = final_weights(whole), final_weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    log = [json.loads(line) for line in (killed / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == sorted(set(steps)), "a step was logged twice or out of order"
    assert {r["task"] for r in log} == {0, 1, 2} and all(r["adapter_norm"] >= 0 for r in log if "loss" in r)
    assert not (killed / "checkpoints").exists()


def test_tasks_are_trained_once_in_order_and_scored_into_one_matrix(stream, tmp_path):
    cfg, model_dir, data_dirs = stream
    run_cfg = train(cfg, model_dir, data_dirs, tmp_path, "lilac")
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert [t["name"] for t in summary["tasks"]] == cfg["families"]["stream"]["stream"]["tasks"]
    assert [t["first_step"] for t in summary["tasks"]] == [1, 3, 4]  # 16, 8, 16 rows at batch 8, trial mode
    # Joules per task only where a counter measured the whole task (none on a CPU without RAPL).
    assert all((t["energy_j"] is None) == (t["energy_source"] == "unavailable") for t in summary["tasks"])
    eval_cfg = config_view(resolve_run_config(cfg, run_cfg["run_id"]), "evaluate")
    matrix = continual.run_accuracy_matrix(run_cfg, data_dirs, model_dir, tmp_path / "snapshots",
                                           tmp_path / "matrix.json", eval_cfg)
    assert matrix["task_metrics"] == ["accuracy", "rougeL", "accuracy"]
    assert len(matrix["accuracy_matrix"]) == 3 and all(len(row) == 3 for row in matrix["accuracy_matrix"])
    assert all(0 <= v <= 1 for row in matrix["accuracy_matrix"] for v in row)
    record = continual.run_stream_evaluate(run_cfg, eval_cfg, data_dirs, model_dir, tmp_path / "snapshots",
                                           tmp_path / "matrix.json", tmp_path / "train_summary.json",
                                           tmp_path / "metrics.json")
    stored = sum(f.stat().st_size for f in (tmp_path / "snapshots" / "task-02").iterdir())
    assert record["metrics"]["extra_memory_mb"] == stored / 1e6
    assert record["continual"]["latency"]["label"] == "host CPU, not a Raspberry Pi"
    assert (record["energy_source"] == "unavailable") == (record["metrics"]["energy_j_per_task"] is None)
    assert record["continual"]["accuracy_matrix"] == matrix["accuracy_matrix"]


def test_a_4bit_backbone_counts_its_weights_not_its_packed_bytes(stream):
    """Budgets divide by the backbone's parameters: bitsandbytes packs two 4-bit weights per
    byte, which must not halve the count (methods/base.param_count)."""
    from wattpeft.methods.base import count_params
    from wattpeft.models import load_backbone

    _, model_dir, _ = stream
    fp32 = load_backbone(model_dir, "text2text")
    nf4 = load_backbone(model_dir, "text2text", precision="nf4")
    assert type(nf4.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert count_params(nf4) == count_params(fp32)
