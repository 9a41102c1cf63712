"""Optuna search, as seed 001 asks: search first on the validation split, then one final
run per seed with the best parameters (only that run is logged and reported).

A trial that diverges is recorded as failed, with its error, and the search goes on; a
trial whose validation score falls below the median of earlier trials at the same epoch
is pruned (optuna's MedianPruner). Only when no trial completes does the search fail.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna

# Trials that always run to the end before the pruner compares against them.
PRUNER_STARTUP_TRIALS = 2

Report = Callable[[int, float], None]


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "loguniform":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=True)
        elif kind == "uniform":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"])
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        else:
            raise ValueError(f"optuna.search_space.{name}.type: unknown type {kind!r}")
    return params


def run_search(
    objective: Callable[[dict[str, Any], Report], float],
    space: dict[str, dict[str, Any]],
    n_trials: int,
    direction: str,
    seed: int,
    failures: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """Best parameters and every trial. `objective(params, report)` trains and returns the
    score; it calls `report(epoch, value)` after each validation, which raises
    optuna.TrialPruned for a hopeless trial. Exceptions in `failures` fail only their trial."""
    if n_trials == 0 or not space:
        reason = "n_trials is 0 (mode trial, or no search asked)" if n_trials == 0 else "empty search space"
        return {"params": {}, "searched": False, "reason": reason, "trials": [], "search_space": space}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
    )
    study.optimize(_trial_function(objective, space, failures), n_trials=n_trials, catch=failures)
    trials = [_trial_record(t) for t in study.trials]
    if not any(t["state"] == "COMPLETE" for t in trials):
        raise RuntimeError(f"every one of {n_trials} search trials failed or was pruned: {trials}")
    return {
        "params": dict(study.best_params),
        "searched": True,
        "direction": direction,
        "best_value": study.best_value,
        "search_seed": seed,
        "search_space": space,
        "trials": trials,
    }


def _trial_function(objective, space, failures):
    def run_trial(trial: optuna.Trial) -> float:
        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {value:.4g} at epoch {epoch} is below the median of earlier trials")

        try:
            return objective(suggest(trial, space), report)
        except failures as err:
            trial.set_user_attr("failure", f"{type(err).__name__}: {err}")
            raise

    return run_trial


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "failure": trial.user_attrs.get("failure"),
    }
