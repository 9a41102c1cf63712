"""Optuna search, as seed 001 asks: search first on the validation split, then one final
run per seed with the best parameters (only that run is logged and reported)."""

from __future__ import annotations

from typing import Any, Callable

import optuna


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
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, dict[str, Any]],
    n_trials: int,
    direction: str,
    seed: int,
) -> dict[str, Any]:
    """Best parameters and every trial; `objective(params)` trains and returns the score."""
    if n_trials == 0 or not space:
        reason = "n_trials is 0 (mode trial, or no search asked)" if n_trials == 0 else "empty search space"
        return {"params": {}, "searched": False, "reason": reason, "trials": []}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda trial: objective(suggest(trial, space)), n_trials=n_trials)
    return {
        "params": dict(study.best_params),
        "searched": True,
        "direction": direction,
        "best_value": study.best_value,
        "trials": [{"number": t.number, "params": t.params, "value": t.value} for t in study.trials],
    }
