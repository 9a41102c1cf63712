"""The search survives a diverging trial, prunes hopeless ones, and fails only when none completes."""

import pytest

from wattpeft.training.search import PRUNER_STARTUP_TRIALS, run_search

SPACE = {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}


class Diverged(RuntimeError):
    pass


def test_a_diverging_trial_is_recorded_as_failed_and_the_search_goes_on():
    calls = []

    def objective(params, report):
        calls.append(params["learning_rate"])
        if len(calls) == 2:
            raise Diverged("loss became nan at optimiser step 3")
        return -params["learning_rate"]

    result = run_search(objective, SPACE, 4, "maximize", seed=7, failures=(Diverged,))
    states = [t["state"] for t in result["trials"]]
    assert len(calls) == 4 and states.count("FAIL") == 1 and states.count("COMPLETE") == 3
    failed = next(t for t in result["trials"] if t["state"] == "FAIL")
    assert "nan at optimiser step 3" in failed["failure"]
    assert result["search_seed"] == 7 and result["search_space"] == SPACE


def test_hopeless_trials_are_pruned():
    def objective(params, report):
        good = len(objective.seen) < PRUNER_STARTUP_TRIALS
        objective.seen.append(params)
        for epoch in range(3):
            report(epoch, 0.9 if good else 0.1)  # far below the median of earlier trials
        return 0.9 if good else 0.1

    objective.seen = []
    result = run_search(objective, SPACE, PRUNER_STARTUP_TRIALS + 2, "maximize", seed=0)
    states = [t["state"] for t in result["trials"]]
    assert states[:PRUNER_STARTUP_TRIALS] == ["COMPLETE"] * PRUNER_STARTUP_TRIALS
    assert states[PRUNER_STARTUP_TRIALS:] == ["PRUNED", "PRUNED"]


def test_no_completed_trial_is_an_error_naming_the_failures():
    def objective(params, report):
        raise Diverged("inf gradient")

    with pytest.raises(RuntimeError, match="every one of 2 search trials failed"):
        run_search(objective, SPACE, 2, "maximize", seed=0, failures=(Diverged,))


def test_an_unexpected_error_still_stops_the_search():
    def objective(params, report):
        raise KeyError("a bug, not a bad trial")

    with pytest.raises(KeyError):
        run_search(objective, SPACE, 2, "maximize", seed=0, failures=(Diverged,))
