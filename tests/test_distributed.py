"""Multi-process training (DDP) on the CPU: two gloo processes train as one process does.

Tolerance: the processes run the same rows as one process, in the same order, and DDP
averages their gradients; what differs is only the order of float32 sums (two means over
half a batch, averaged, against one mean over the batch; matrix products of other shapes).
That moves losses and weights by about a float32 ulp (observed: under 1e-7 relative after
four steps). REL = 1e-5 leaves a margin of 100 for that, and still catches small errors:
weighting the Llama run's shards by rows instead of target tokens moves its losses by 3e-5
and its weights by 2e-4 within four steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from wattpeft.stages.finetune import run_finetune
from wattpeft.training.distributed import launch

ROOT = Path(__file__).resolve().parents[1]
REL = 1e-5
RUN = "spectral--lora--b5--s0"  # LoRA on the tiny Llama: no dropout anywhere, an LM loss


@pytest.fixture
def one_cpu_process(monkeypatch):
    """The one-process reference runs here, on the CPU as the gloo processes do (also on a
    host with CUDA), in fp32. accelerate's state is a process-wide singleton that refuses a
    change of device or precision (other tests in this process train in bf16): start afresh."""
    from accelerate.state import AcceleratorState

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """(run config, data dir, model dir, best params file) of RUN on the toy summaries."""
    from wattpeft.assets import build_tiny_model
    from wattpeft.config import config_view, resolve_run_config, validate_config
    from wattpeft.data.tokenise import tokenise_dataset
    from wattpeft.utils.io import write_json

    tmp = tmp_path_factory.mktemp("llama")
    cfg = validate_config(yaml.safe_load((ROOT / ".test/config.yaml").read_text()), base_dir=ROOT)
    model_dir, data_dir = tmp / "model", tmp / "data"
    build_tiny_model(cfg["models"]["tiny_llama"], model_dir)
    tokenise_dataset("toy_summaries", cfg["datasets"]["toy_summaries"], str(model_dir), data_dir, tmp / "resources")
    run_cfg = config_view(resolve_run_config(cfg, RUN), "train")
    # 4 optimiser steps of 2 batches of 8; fp32, so that both runs round alike
    run_cfg["training"].update(epochs=2, max_batches_per_epoch=4, gradient_accumulation_steps=2,
                               mixed_precision="no")
    write_json(tmp / "best_params.json", {"params": {}})
    return run_cfg, data_dir, model_dir, tmp / "best_params.json"


def finetune(llama_run, out_dir: Path, **kwargs) -> dict:
    run_cfg, data_dir, model_dir, best = llama_run
    out = {"adapter": out_dir / "adapter", "summary": out_dir / "train_summary.json",
           "log": out_dir / "train_log.jsonl", "config": out_dir / "config.json"}
    return run_finetune(run_cfg, data_dir, model_dir, best, out_dir, out, **kwargs)


def logged_losses(out_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def adapter_tensors(out_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted((out_dir / "adapter").glob("*.safetensors"))
    assert files, "the adapter has no weights"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def test_two_gloo_processes_train_like_one(llama_run, tmp_path, one_cpu_process):
    one = finetune(llama_run, tmp_path / "one")
    two = finetune(llama_run, tmp_path / "two", processes=2, cpu=True)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert json.loads((tmp_path / "two/train_summary.json").read_text())["processes"] == 2
    assert two["steps"] == one["steps"] == 4
    ones, twos = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert len(ones) == len(twos) == 4
    assert twos == pytest.approx(ones, rel=REL)
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], rel=REL)
    assert two["validation"]["eval_loss"] == pytest.approx(one["validation"]["eval_loss"], rel=REL)
    a, b = adapter_tensors(tmp_path / "one"), adapter_tensors(tmp_path / "two")
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=REL, atol=1e-6, msg=name)
    # the comparison means something only if training moved the adapter
    moved = max(float(t.abs().max()) for n, t in a.items() if "lora_B" in n)
    assert moved > 1e-4


def uneven_run() -> tuple[list[float], dict[str, torch.Tensor]]:
    """LoRA without dropout on 57 rows in batches of 8: the last batch has one row, so under
    two processes one of them has none of it (it runs a row whose loss counts 0)."""
    from helpers import collate, make_method, run_cfg, separable_rows, tiny_bert, trainable
    from wattpeft.training.trainer import Trainer, plan_schedule

    cfg, rows = run_cfg(mixed_precision="no", epochs=1, log_every=1), separable_rows(57)
    method = make_method("lora", {"alpha": 16, "dropout": 0.0},
                         total_steps=plan_schedule(len(rows), cfg["training"]).total_steps)
    model = tiny_bert()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model = method.attach(model)
    outcome = Trainer(cfg, model, method, rows, collate, progress=False).train()
    return [r["loss"] for r in outcome.log if "loss" in r], trainable(model)


def uneven_and_resumed(ckpt: str) -> dict:
    """In each of two processes: `uneven_run`, then LoRA with dropout stopped after step 4,
    resumed from rank 0's checkpoint, and the same run unstopped."""
    from helpers import make_run, run_cfg, trainable

    result = {"uneven": uneven_run()}
    cfg = run_cfg(mixed_precision="no", epochs=2, checkpoint_every=3)

    def stop_after_4(step):
        if step == 4:
            raise KeyboardInterrupt

    try:
        make_run("lora", cfg, Path(ckpt), on_step_end=stop_after_4)[2].train()
    except KeyboardInterrupt:
        pass
    _, model, trainer = make_run("lora", cfg, Path(ckpt))
    result["resumed"] = (trainer.train(), trainable(model))
    _, model, trainer = make_run("lora", cfg)
    result["clean"] = (trainer.train(), trainable(model))
    return result


def test_uneven_batches_and_resume_under_ddp(tmp_path, one_cpu_process):
    two = launch(uneven_and_resumed, (str(tmp_path / "ck"),), 2, cpu=True)
    losses, weights = uneven_run()
    assert len(losses) == 4 and two["uneven"][0] == pytest.approx(losses, rel=REL)
    for name, value in weights.items():
        torch.testing.assert_close(two["uneven"][1][name], value, rtol=REL, atol=1e-6, msg=name)
    (resumed, resumed_weights), (clean, clean_weights) = two["resumed"], two["clean"]
    assert resumed.resumed_from_step == 3 and resumed.processes == 2
    strip = lambda log: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log]  # noqa: E731
    assert strip(resumed.log) == strip(clean.log)
    assert all(torch.equal(resumed_weights[n], clean_weights[n]) for n in clean_weights)


def crash_on_rank_1():
    import os

    if os.environ["RANK"] == "1":
        raise ValueError("rank 1 gave up")
    return "rank 0 finished"


def test_a_worker_exception_comes_back_with_its_message():
    with pytest.raises(ValueError, match="rank 1 gave up"):
        launch(crash_on_rank_1, (), 2, cpu=True)


def test_more_processes_than_cuda_devices_is_refused(llama_run, tmp_path):
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = max(2, visible + 1)
    with pytest.raises(RuntimeError, match=rf"gpu: {wanted} .* only {visible} CUDA device"):
        finetune(llama_run, tmp_path, processes=wanted)
    assert not (tmp_path / "train_summary.json").exists()
