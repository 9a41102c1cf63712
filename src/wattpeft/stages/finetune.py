"""Search and fine-tuning stages: optuna search per (family, method, budget), then one
run per seed with the best parameters. Outputs appear only when a run completes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..config import apply_params
from ..training.tracking import mirror_to_wandb
from ..utils.io import atomic_path, read_json, write_json
from .common import RunData, model_source, open_run_data, pin_threads


def _train(run_cfg: dict[str, Any], data: RunData, model_dir: Path, *, checkpoint_dir=None, progress=True):
    """Attach the method to a fresh backbone and train it; returns (method, model, outcome)."""
    from accelerate.utils import set_seed

    from ..data.loading import make_collator
    from ..methods import get_method
    from ..training.trainer import Trainer, plan_schedule
    from ..training.validation import validation_metrics

    # Seed before anything is initialised: a new classification head and the adapter
    # matrices are drawn here, long before the trainer starts.
    set_seed(run_cfg["seed"])
    _, model = data.load_model(model_source(model_dir))
    train_rows, val_rows = data.split("train"), data.split("validation")
    collate = make_collator(data.task, data.manifest["pad_token_id"])
    schedule = plan_schedule(len(train_rows), run_cfg["training"])
    method = get_method(run_cfg["method"])(
        run_cfg["method_params"], run_cfg["budget"], data.task, schedule.total_steps
    )
    model = method.attach(model)
    trainer = Trainer(
        run_cfg, model, method, train_rows, collate,
        checkpoint_dir=checkpoint_dir,
        evaluate=lambda m: validation_metrics(m, val_rows, collate, data.task),
        progress=progress,
    )
    return method, model, trainer.train()


def search_objective(run_cfg: dict[str, Any]) -> tuple[str, str]:
    """The validation score that search optimises: the primary metric when validation
    reports it (classification accuracy), else the validation loss."""
    primary = run_cfg["primary_metric"]
    if primary["name"] == "accuracy":
        return "accuracy", primary["direction"]
    return "eval_loss", "minimize"


def run_search(run_cfg: dict[str, Any], data_dir: Path, model_dir: Path, out_path: Path, threads: int = 1) -> dict:
    from ..training.search import run_search as optuna_search

    pin_threads(threads)
    data = open_run_data(data_dir)
    metric, direction = search_objective(run_cfg)

    def objective(params: dict[str, Any]) -> float:
        _, _, outcome = _train(apply_params(run_cfg, params), data, Path(model_dir), progress=False)
        return outcome.validation[metric]

    result = optuna_search(
        objective, run_cfg["optuna"].get("search_space", {}), run_cfg["optuna"]["n_trials"],
        direction, run_cfg["seed"],
    )
    result.update(objective=metric, group_id=run_cfg["group_id"], searched_with_seed=run_cfg["seed"])
    write_json(out_path, result)
    return result


def run_finetune(
    run_cfg: dict[str, Any],
    data_dir: Path,
    model_dir: Path,
    best_params_path: Path,
    run_dir: Path,
    out: dict[str, Path],
    threads: int = 1,
) -> dict:
    """Train one run; writes out['adapter'] (folder), out['summary'], out['log'], out['config']."""
    pin_threads(threads)
    best = read_json(best_params_path)
    run_cfg = apply_params(run_cfg, best["params"])
    data = open_run_data(data_dir)
    checkpoints = Path(run_dir) / "checkpoints" / run_cfg["config_hash"]
    method, model, outcome = _train(run_cfg, data, Path(model_dir), checkpoint_dir=checkpoints)
    with atomic_path(out["adapter"]) as tmp:
        method.save(model, tmp)
    summary = {
        "run_id": run_cfg["run_id"],
        "steps": outcome.steps,
        "epochs": outcome.epochs,
        "train_time_s": outcome.train_time_s,
        "final_train_loss": outcome.final_loss,
        "validation": outcome.validation,
        "resumed_from_step": outcome.resumed_from_step,
        "mixed_precision": outcome.mixed_precision,
        "threads": threads,
        "method_stats": method.stats,
        "tuned_params": best["params"],
        "data_hash": data.data_hash,
        "config_hash": run_cfg["config_hash"],
    }
    write_json(out["config"], {**run_cfg, "data_hash": data.data_hash})
    with atomic_path(out["log"]) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in outcome.log))
    write_json(out["summary"], summary)
    mirror_to_wandb(run_cfg, outcome.log, summary)
    shutil.rmtree(checkpoints.parent, ignore_errors=True)  # finished: nothing to resume
    return summary
