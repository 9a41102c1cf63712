"""The trainer: budgets, learning, exact resume after a kill, NaN stops, hardening."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import make_run, run_cfg, trainable
from wattpeft.methods import method_names
from wattpeft.training.checkpoint import latest_checkpoint
from wattpeft.training.precision import resolve_mixed_precision
from wattpeft.training.trainer import NonFiniteLossError, plan_schedule

ROOT = Path(__file__).resolve().parents[1]


def test_schedule_counts_steps_and_trial_cap():
    training = run_cfg()["training"]
    assert plan_schedule(64, training).total_steps == 3 * 4  # 8 batches / accumulation 2
    training.update(max_batches_per_epoch=2, epochs=1)
    schedule = plan_schedule(64, training)
    assert (schedule.batches_per_epoch, schedule.total_steps) == (2, 1)


def test_fp16_is_refused_on_cpu():
    with pytest.raises(ValueError, match="fp16 is refused on a CPU"):
        resolve_mixed_precision("fp16", torch.device("cpu"))
    assert resolve_mixed_precision("auto", torch.device("cpu")) in ("bf16", "no")


# Budgets, what trains, and save/load/harden are the method contract: tests/test_methods.py.


def test_lora_learns_a_separable_task():
    _, model, trainer = make_run("lora", run_cfg(epochs=6, learning_rate=2e-2))
    outcome = trainer.train()
    losses = [r["loss"] for r in outcome.log if "loss" in r]
    assert losses[-1] < losses[0]
    assert outcome.validation["accuracy"] >= 0.9


@pytest.mark.parametrize("method_name", method_names())
def test_killed_run_resumes_to_identical_result(tmp_path, method_name):
    cfg = run_cfg()
    _, ref_model, ref_trainer = make_run(method_name, cfg, tmp_path / "ref")
    reference = ref_trainer.train()

    def kill_at_step_7(step):
        if step == 7:
            raise KeyboardInterrupt

    _, _, doomed = make_run(method_name, cfg, tmp_path / "run", on_step_end=kill_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        doomed.train()
    assert latest_checkpoint(tmp_path / "run").name == "step-0000006"

    _, model, resumed = make_run(method_name, cfg, tmp_path / "run")
    outcome = resumed.train()
    assert outcome.resumed_from_step == 6
    assert outcome.validation == reference.validation
    expected = trainable(ref_model)
    for name, value in trainable(model).items():
        assert torch.equal(value, expected[name]), name
    strip = lambda log: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log]  # noqa: E731
    assert strip(outcome.log) == strip(reference.log)


def test_sigkill_mid_run_then_resume_matches(tmp_path):
    """A real kill (SIGKILL from outside), not an exception: the rerun resumes and matches."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_training import make_run, run_cfg
        from pathlib import Path
        slow = sys.argv[2] == "slow"
        _, model, trainer = make_run("lora", run_cfg(epochs=4, checkpoint_every=2), Path(sys.argv[1]),
                                     on_step_end=(lambda s: time.sleep(0.3)) if slow else None)
        out = trainer.train()
        torch.save({{n: p for n, p in model.named_parameters() if p.requires_grad}}, Path(sys.argv[1]) / "final.pt")
        print("RESUMED_FROM", out.resumed_from_step)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([sys.executable, str(script), str(tmp_path / "a"), "slow"], env=env)
    deadline = time.monotonic() + 60
    while latest_checkpoint(tmp_path / "a") is None or latest_checkpoint(tmp_path / "a").name < "step-0000004":
        assert time.monotonic() < deadline and victim.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), "fast"],
                             env=env, capture_output=True, text=True, check=True)
    assert "RESUMED_FROM None" not in resumed.stdout
    subprocess.run([sys.executable, str(script), str(tmp_path / "b"), "fast"], env=env, check=True)
    killed, clean = torch.load(tmp_path / "a" / "final.pt"), torch.load(tmp_path / "b" / "final.pt")
    assert all(torch.equal(killed[n], clean[n]) for n in clean)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    _, model, trainer = make_run("lora", run_cfg(), tmp_path / "ck")
    original_forward = model.forward

    def poisoned(*args, step=[0], **kwargs):  # noqa: B006 - a counter shared across calls
        step[0] += 1
        out = original_forward(*args, **kwargs)
        # Forward calls: 4 steps x 2 micro-batches, 1 validation pass at the epoch's end,
        # then the first micro-batch of optimiser step 5 is poisoned.
        if step[0] > 9:
            out.loss = out.loss * float("nan")
        return out

    model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="loss became nan at optimiser step 5.*step-0000003"):
        trainer.train()
    kept = latest_checkpoint(tmp_path / "ck")
    assert kept.name == "step-0000003"
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(kept / "trainable.safetensors").values())
