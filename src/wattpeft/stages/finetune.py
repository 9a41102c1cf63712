"""Search and fine-tuning stages: optuna search per (family, method, budget), then one
run per seed with the best parameters. Outputs appear only when a run completes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from ..config import apply_params
from ..utils.io import atomic_path, read_json, write_json
from .common import RunData, model_source, open_run_data, pin_threads, read_method_inputs


def _train(run_cfg: dict[str, Any], data: RunData, model_dir: Path, *, checkpoint_dir=None, progress=True,
           on_validation=None, method_inputs: dict[str, Any] | None = None):
    """Attach the method to a fresh backbone and train it; returns (method, model, outcome).
    `on_validation(metrics)` sees every end-of-epoch validation (the search prunes with it)."""
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
        run_cfg["method_params"], run_cfg["budget"], data.task, schedule.total_steps, method_inputs
    )
    model = method.attach(model)
    trainer = Trainer(
        run_cfg, model, method, train_rows, collate,
        checkpoint_dir=checkpoint_dir,
        evaluate=lambda m: _validated(validation_metrics(m, val_rows, collate, data.task), on_validation),
        progress=progress,
    )
    return method, model, trainer.train()


def _validated(metrics: dict[str, float], on_validation) -> dict[str, float]:
    if on_validation is not None:
        on_validation(metrics)
    return metrics


def search_objective(run_cfg: dict[str, Any]) -> tuple[str, str]:
    """The validation score that search optimises: the primary metric when validation
    reports it (classification accuracy), else the validation loss."""
    primary = run_cfg["primary_metric"]
    if primary["name"] == "accuracy":
        return "accuracy", primary["direction"]
    return "eval_loss", "minimize"


def run_search(run_cfg: dict[str, Any], data_dir: Path, model_dir: Path, out_path: Path, threads: int = 1,
               needs: dict[str, Path] | None = None, code: dict[str, str] | None = None) -> dict:
    """Search on the validation split. Trials train with the search's own seed
    (optuna.seed), so that no final run replays the best trial; a diverging trial fails
    alone and hopeless ones are pruned (training/search.py).

    The study lives in study.journal beside `out_path` (results/search/{group}/), which is no
    Snakemake output, so a killed job's finished trials survive and its rerun resumes them.
    Its name hashes everything the search depends on (`search_study_name`): a changed config,
    input or `code` (the rule's code versions) starts a new study instead."""
    from ..training.search import run_search as optuna_search

    metric, direction = search_objective(run_cfg)
    search_seed = run_cfg["optuna"]["seed"]
    space, n_trials = run_cfg["optuna"].get("search_space", {}), run_cfg["optuna"]["n_trials"]
    if n_trials == 0 or not space:  # nothing to search: answer without loading torch or data
        result = optuna_search(None, space, n_trials, direction, search_seed)
        result.update(objective=metric, group_id=run_cfg["group_id"])
        write_json(out_path, result)
        return result

    from ..training.trainer import NonFiniteLossError

    pin_threads(threads)
    data = open_run_data(data_dir)
    method_inputs = read_method_inputs(needs)

    def objective(params: dict[str, Any], report) -> float:
        trial_cfg = apply_params({**run_cfg, "seed": search_seed}, params)
        epochs = iter(range(trial_cfg["training"]["epochs"] + 1))
        _, _, outcome = _train(trial_cfg, data, Path(model_dir), progress=False, method_inputs=method_inputs,
                               on_validation=lambda m: report(next(epochs), m[metric]))
        return outcome.validation[metric]

    result = optuna_search(
        objective, space, n_trials, direction, search_seed, failures=(NonFiniteLossError,),
        journal=Path(out_path).parent / "study.journal",
        name=search_study_name(run_cfg, data_dir, model_dir, needs, code),
    )
    result.update(objective=metric, group_id=run_cfg["group_id"])
    write_json(out_path, result)
    return result


def search_study_name(run_cfg: dict[str, Any], data_dir: Path, model_dir: Path,
                      needs: dict[str, Path] | None = None, code: dict[str, str] | None = None) -> str:
    """`{group}--{hash}` of what decides the trials: the search view of the config (search
    space, n_trials, seed, training settings, primary metric and so the direction), the
    data's and the model's manifests (their content hashes), the method's input files, and
    the code versions: whatever makes Snakemake rerun the search (other than an unfinished
    job) names a fresh study, and a rerun with nothing changed resumes the old one."""
    from ..training.search import study_name

    def manifest(folder: Path) -> dict | None:
        path = Path(folder) / "manifest.json"
        return read_json(path) if path.is_file() else None

    return study_name(run_cfg["group_id"], {
        "config": run_cfg,
        "objective": search_objective(run_cfg),
        "data": manifest(data_dir),
        "model": manifest(model_dir),
        "inputs": {k: content_digest(Path(p)) for k, p in (needs or {}).items()},
        "code": code,
    })


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, in sorted order): a
    method's need may be either (the surrogate store is a folder)."""
    digest = hashlib.sha256()
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def run_finetune(
    run_cfg: dict[str, Any],
    data_dir: Path,
    model_dir: Path,
    best_params_path: Path,
    run_dir: Path,
    out: dict[str, Path],
    threads: int = 1,
    needs: dict[str, Path] | None = None,
    processes: int = 1,
    cpu: bool = False,
) -> dict:
    """Train one run; writes out['adapter'] (folder), out['summary'], out['log'], out['config'].
    `needs`: the files the method's registry entry asks for (stages/common.read_method_inputs).
    `processes` > 1: that many data-parallel training processes (DDP), one per GPU, sharing
    the `threads`; the job must see that many CUDA devices. `cpu=True` runs them on the CPU
    with gloo instead (tests). Same data order and global batch as one process."""
    args = (run_cfg, Path(data_dir), Path(model_dir), Path(best_params_path), Path(run_dir),
            {k: Path(v) for k, v in out.items()}, threads, {k: Path(v) for k, v in (needs or {}).items()},
            processes)
    if processes > 1:
        from ..training.distributed import launch

        return launch(_finetune, args, processes, cpu=cpu)
    return _finetune(*args)


def _finetune(run_cfg, data_dir, model_dir, best_params_path, run_dir, out, threads, needs,
              processes) -> dict | None:
    """run_finetune in one of its `processes` training processes; rank 0 (the only one when
    `processes` is 1) writes the outputs and returns the summary, the others return None."""
    from accelerate import PartialState

    pin_threads(max(1, threads // processes))
    best = read_json(best_params_path)
    run_cfg = apply_params(run_cfg, best["params"])
    data = open_run_data(data_dir)
    checkpoints = Path(run_dir) / "checkpoints" / run_cfg["config_hash"]
    method, model, outcome = _train(run_cfg, data, Path(model_dir), checkpoint_dir=checkpoints,
                                    method_inputs=read_method_inputs(needs))
    if not PartialState().is_main_process:
        return None
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
        "skipped_steps": outcome.skipped_steps,  # fp16: steps the gradient scaler skipped
        "mixed_precision": outcome.mixed_precision,
        "threads": threads,
        "processes": outcome.processes,  # data-parallel training processes (DDP), one per GPU
        "method_stats": method.stats,
        "tuned_params": best["params"],
        "data_hash": data.data_hash,
        "config_hash": run_cfg["config_hash"],
    }
    # The search that chose the tuned parameters (seed 001's per-run "optuna search space").
    optuna = {k: best.get(k) for k in ("searched", "search_space", "search_seed", "objective", "best_value")}
    optuna["n_trials"] = len(best.get("trials", []))
    write_json(out["config"], {**run_cfg, "optuna": optuna, "data_hash": data.data_hash})
    with atomic_path(out["log"]) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in outcome.log))
    write_json(out["summary"], summary)
    shutil.rmtree(checkpoints.parent, ignore_errors=True)  # finished: nothing to resume
    return summary


def run_wandb_mirror(log_cfg: dict[str, Any], train_log: Path, summary_path: Path, out_path: Path) -> dict:
    """Mirror a finished run's local log to W&B; writes a receipt (what was mirrored, where)."""
    from ..training.tracking import mirror_to_wandb

    log = [json.loads(line) for line in Path(train_log).read_text().splitlines() if line]
    mirrored = mirror_to_wandb(log_cfg, log, read_json(summary_path))
    receipt = {"run_id": log_cfg["run_id"], "mirrored": mirrored, "wandb": log_cfg["wandb"], "records": len(log)}
    write_json(out_path, receipt)
    return receipt
