"""fp16 with a gradient scaler: overflowing steps are skipped, not fatal, and a resumed run
keeps the loss scale.

There is no GPU here and the trainer refuses fp16 on a CPU, so the tests give the trainer
accelerate's own fp16 Accelerator (which makes no scaler off the GPU) plus torch's CPU
GradScaler: fp16 autocast, scaled backward, unscale + clip and the scaler's skipping step
are then the very code paths a CUDA run takes.
"""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from helpers import collate, run_cfg, separable_rows, tiny_bert
from wattpeft.methods import get_method
from wattpeft.training import trainer as trainer_mod
from wattpeft.training.checkpoint import latest_checkpoint
from wattpeft.training.trainer import NonFiniteLossError, Trainer, plan_schedule

INIT_SCALE = 2.0**10  # low enough that tiny BERT never overflows by itself


@pytest.fixture
def cpu_fp16(monkeypatch):
    """Call with GradScaler options; returns the list of accelerators the trainer builds."""
    made = []

    def accelerator(**kwargs):
        acc = Accelerator(**kwargs)
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, **scaler_kwargs)
        acc.native_amp = True  # fp16 autocast, and clip_grad_norm_ unscales through the scaler
        made.append(acc)
        return acc

    scaler_kwargs = {}

    def enable(**kwargs):
        scaler_kwargs.update(kwargs)
        monkeypatch.setattr(trainer_mod, "resolve_mixed_precision", lambda requested, device: "fp16")
        monkeypatch.setattr(trainer_mod, "Accelerator", accelerator)
        return made

    # accelerate's state is a process-wide singleton that refuses a change of precision
    AcceleratorState._reset_state()
    yield enable
    AcceleratorState._reset_state()


class InfGrad(torch.autograd.Function):
    """Identity forward, inf backward: an fp16 gradient overflow with a finite loss."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def overflow_on(method, steps, value=None):
    """Optimiser steps `steps` (1-based) get inf gradients (or, with `value`, that loss term)."""

    def extra_loss(model, step):
        if step + 1 not in steps:
            return None
        param = next(p for p in model.parameters() if p.requires_grad)
        term = InfGrad.apply(param.sum()) * 0.0
        return term if value is None else term + value

    method.extra_loss = extra_loss


def make_run(cfg, checkpoint_dir=None, overflow_steps=(), **kwargs):
    rows = separable_rows()
    schedule = plan_schedule(len(rows), cfg["training"])
    method = get_method("lora")({"alpha": 16, "dropout": 0.1}, 5.0, "classification", schedule.total_steps)
    model = method.attach(tiny_bert())
    overflow_on(method, set(overflow_steps))
    trainer = Trainer(cfg, model, method, rows, collate, checkpoint_dir=checkpoint_dir, progress=False, **kwargs)
    return model, trainer


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Recorder:
    """on_step_end hook: per optimiser step, the weights, loss scale and scheduler count."""

    def __init__(self, model, accelerators, schedulers):
        self.model, self.accelerators, self.schedulers = model, accelerators, schedulers
        self.weights, self.scales, self.sched_steps = {}, {}, {}

    def __call__(self, step):
        self.weights[step] = trainable(self.model)
        self.scales[step] = self.accelerators[-1].scaler.get_scale()
        self.sched_steps[step] = self.schedulers[-1].last_epoch


def spy_schedulers(monkeypatch):
    made, real = [], trainer_mod.get_linear_schedule_with_warmup

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(trainer_mod, "get_linear_schedule_with_warmup", spy)
    return made


def test_overflowing_step_is_skipped_and_the_run_goes_on(cpu_fp16, monkeypatch):
    accelerators, schedulers = cpu_fp16(), spy_schedulers(monkeypatch)
    model, trainer = make_run(run_cfg(), overflow_steps={5})
    trainer.on_step_end = record = Recorder(model, accelerators, schedulers)
    outcome = trainer.train()

    assert (outcome.mixed_precision, outcome.steps, outcome.skipped_steps) == ("fp16", 12, 1)
    before, skipped, after = record.weights[4], record.weights[5], record.weights[6]
    assert all(torch.equal(skipped[n], before[n]) for n in before)
    assert any(not torch.equal(after[n], skipped[n]) for n in after)
    # the scheduler counts applied steps only; the scaler halves its scale on the skip
    assert [record.sched_steps[s] for s in range(1, 13)] == [1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10, 11]
    assert [record.scales[s] for s in (4, 5, 12)] == [INIT_SCALE, INIT_SCALE / 2, INIT_SCALE / 2]
    skipped_in_log = {r["step"]: r["skipped_steps"] for r in outcome.log if "loss" in r}
    assert skipped_in_log == {2: 0, 4: 0, 6: 1, 8: 1, 10: 1, 12: 1}
    assert all(torch.isfinite(p).all() for p in trainable(model).values())


def test_endless_skipping_stops_the_run(cpu_fp16, monkeypatch):
    cpu_fp16()
    monkeypatch.setattr(trainer_mod, "MAX_SKIPPED_IN_A_ROW", 3)
    # 3 in a row are tolerated, an applied step 4 resets the count, step 8 is the 4th in a row
    _, trainer = make_run(run_cfg(), overflow_steps={1, 2, 3, 5, 6, 7, 8, 9})
    with pytest.raises(NonFiniteLossError, match="skipped 4 optimiser steps in a row .* up to step 8 "):
        trainer.train()


def test_non_finite_loss_still_stops_under_fp16(cpu_fp16):
    cpu_fp16()
    model, trainer = make_run(run_cfg())
    overflow_on(trainer.method, {3}, value=float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became nan at optimiser step 3"):
        trainer.train()


def test_resumed_fp16_run_keeps_the_loss_scale(tmp_path, cpu_fp16, monkeypatch):
    # growth every 3 clean steps: the growth tracker matters as well as the scale
    accelerators, schedulers = cpu_fp16(growth_interval=3), spy_schedulers(monkeypatch)
    cfg, overflows = run_cfg(), {2, 5, 9}
    ref_model, ref_trainer = make_run(cfg, tmp_path / "ref", overflows)
    ref_trainer.on_step_end = ref = Recorder(ref_model, accelerators, schedulers)
    reference = ref_trainer.train()

    def kill_at_step_7(step):
        if step == 7:
            raise KeyboardInterrupt

    _, doomed = make_run(cfg, tmp_path / "run", overflows, on_step_end=kill_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        doomed.train()
    saved = torch.load(latest_checkpoint(tmp_path / "run") / "state.pt", weights_only=False)
    assert saved["scaler"]["scale"] == ref.scales[6] != INIT_SCALE

    model, resumed = make_run(cfg, tmp_path / "run", overflows)
    resumed.on_step_end = rec = Recorder(model, accelerators, schedulers)
    outcome = resumed.train()
    assert outcome.resumed_from_step == 6
    assert rec.scales == {s: ref.scales[s] for s in range(7, 13)}
    assert outcome.skipped_steps == reference.skipped_steps == 3
    expected = trainable(ref_model)
    assert all(torch.equal(v, expected[n]) for n, v in trainable(model).items())
    strip = lambda log: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in log]  # noqa: E731
    assert strip(outcome.log) == strip(reference.log)


def test_checkpoint_without_scaler_state_still_resumes(tmp_path, cpu_fp16):
    accelerators = cpu_fp16()

    def kill_at_step_4(step):
        if step == 4:
            raise KeyboardInterrupt

    _, doomed = make_run(run_cfg(), tmp_path, {2}, on_step_end=kill_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        doomed.train()
    # rewrite it as a checkpoint from before fp16 support: no scaler, no skip counts
    state_path = latest_checkpoint(tmp_path) / "state.pt"
    state = torch.load(state_path, weights_only=False)
    del state["scaler"], state["position"]["skipped_steps"], state["position"]["skipped_in_a_row"]
    torch.save(state, state_path)

    _, resumed = make_run(run_cfg(), tmp_path, {2})
    outcome = resumed.train()
    assert (outcome.resumed_from_step, outcome.steps, outcome.skipped_steps) == (3, 12, 0)
    assert accelerators[-1].scaler.get_scale() == INIT_SCALE  # a fresh scale, no skip since
