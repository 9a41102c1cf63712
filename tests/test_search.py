"""The search survives a diverging trial, prunes hopeless ones, and fails only when none completes;
its study, in a journal file, resumes after a kill and is shared by worker processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from wattpeft.training import search
from wattpeft.training.search import INTERRUPTED_ATTR, PRUNER_STARTUP_TRIALS, run_search, study_name

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


# --- The study in a journal file: resumable after a kill, shared by worker processes ---

SRC = Path(__file__).resolve().parents[1] / "src"
WIDE = {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1.0},
        "rank": {"type": "int", "low": 1, "high": 64},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "scheduler": {"type": "categorical", "choices": ["linear", "cosine", "constant"]}}


def score(params):
    return -abs(params["learning_rate"] - 1e-2) - params["dropout"] / 10 + params["rank"] / 1000


def counted_params(result):
    return [t["params"] for t in result["trials"]]


def test_a_search_interrupted_after_k_trials_resumes_with_the_missing_ones_only(tmp_path):
    n, k = 6, 2
    calls = []

    def interrupted(params, report):
        if len(calls) == k:
            raise KeyboardInterrupt
        calls.append(params)
        return score(params)

    journal = tmp_path / "study.journal"
    with pytest.raises(KeyboardInterrupt):
        run_search(interrupted, WIDE, n, "maximize", seed=3, journal=journal, name="g--x")
    calls.clear()

    def objective(params, report):
        calls.append(params)
        return score(params)

    resumed = run_search(objective, WIDE, n, "maximize", seed=3, journal=journal, name="g--x")
    assert len(calls) == n - k and len(resumed["trials"]) == n
    assert [t["state"] for t in resumed["trials"]] == ["COMPLETE"] * n
    assert [i["reason"] for i in resumed["interrupted"]] == ["KeyboardInterrupt: "]
    # Trial k samples with a seed of its own: the resumed search is the uninterrupted one.
    calls.clear()
    whole = run_search(objective, WIDE, n, "maximize", seed=3, journal=tmp_path / "other.journal", name="g--x")
    assert counted_params(resumed) == counted_params(whole) and len(calls) == n
    assert resumed["params"] == whole["params"] and resumed["study"]["name"] == "g--x"
    assert run_search(objective, WIDE, n, "maximize", seed=3, journal=journal, name="g--x")["trials"] == resumed["trials"]
    assert len(calls) == n  # a finished study runs nothing more


# A worker as its own process: runs the search and notes each trial it ran in `ran`.
WORKER = """
import json, os, sys, time
from pathlib import Path
from wattpeft.training.search import run_search
journal, ran, n, stall_at, wait_for = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
def objective(params, report):
    Path(str(ran) + ".started").touch()
    while not all(Path(w + ".started").exists() for w in wait_for):
        time.sleep(0.01)
    done = ran.read_text().count("\\n") if ran.exists() else 0
    if done == stall_at:
        Path(str(ran) + ".stalled").touch()
        time.sleep(600)
    with open(ran, "a") as f:
        f.write(json.dumps(params) + "\\n")
    time.sleep(0.02)
    return -abs(params["learning_rate"] - 1e-2)
result = run_search(objective, SPACE, n, "maximize", seed=5, journal=journal, name="g--shared")
""".replace("SPACE", repr(SPACE))


@pytest.fixture
def worker():
    """Starts a worker process; any still running at the end of the test is killed."""
    procs = []

    def start(journal, ran, n, stall_at=-1, wait_for=()):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(journal), str(ran), str(n), str(stall_at),
                                       *map(str, wait_for)], env=env))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ran_params(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_file(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_killed_worker_process_leaves_a_study_that_resumes(tmp_path, worker):
    n, k = 5, 2
    journal, ran = tmp_path / "study.journal", tmp_path / "killed.ran"
    proc = worker(journal, ran, n, stall_at=k)
    wait_for_file(Path(str(ran) + ".stalled"))
    proc.send_signal(signal.SIGKILL)  # no handler runs: trial k is left RUNNING in the journal
    proc.wait()
    assert len(ran_params(ran)) == k

    calls = []

    def objective(params, report):
        calls.append(params)
        return -abs(params["learning_rate"] - 1e-2)

    result = run_search(objective, SPACE, n, "maximize", seed=5, journal=journal, name="g--shared")
    assert len(calls) == n - k and len(result["trials"]) == n
    assert counted_params(result)[:k] == ran_params(ran) and counted_params(result)[k:] == calls
    [interrupted] = result["interrupted"]
    assert interrupted["number"] == k and "is gone" in interrupted["reason"]


def test_two_worker_processes_share_one_study_and_run_exactly_n_trials(tmp_path, worker):
    n = 8
    journal, ran = tmp_path / "study.journal", [tmp_path / "a.ran", tmp_path / "b.ran"]
    procs = [worker(journal, ran[0], n, wait_for=ran), worker(journal, ran[1], n, wait_for=ran)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    each = [ran_params(r) for r in ran]
    assert all(each), f"one worker ran no trial: {each}"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="g--shared", storage=storage).get_trials()
    assert len(trials) == n and all(t.state.name == "COMPLETE" for t in trials)
    ran_all = each[0] + each[1]
    assert sorted(map(json.dumps, ran_all)) == sorted(json.dumps(t.params) for t in trials)
    assert len({json.dumps(p) for p in ran_all}) == n  # no trial ran twice, no two drew the same point


def test_a_changed_search_space_starts_a_new_study(tmp_path):
    journal, calls = tmp_path / "study.journal", []

    def objective(params, report):
        calls.append(params)
        return score({"rank": 8, "dropout": 0.1, **params})

    space = {"learning_rate": SPACE["learning_rate"]}
    other = {"learning_rate": {"type": "uniform", "low": 1e-4, "high": 1e-1}}
    names = [study_name("g", {"search_space": s, "n_trials": 3}) for s in (space, other, space)]
    assert names[0] == names[2] != names[1]
    for s, name in zip((space, other, space), names):
        run_search(objective, s, 3, "maximize", seed=0, journal=journal, name=name)
    assert len(calls) == 6  # the second space ran its own 3 trials; the first resumed done
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert sorted(optuna.get_all_study_names(storage)) == sorted(set(names))


def test_running_trials_of_dead_workers_are_interrupted_and_live_ones_kept(tmp_path):
    journal = tmp_path / "study.journal"
    storage = search._journal_storage(journal)
    study = optuna.create_study(storage=storage, study_name="g--h", direction="maximize")
    for host, beat in (("elsewhere", time.time() - 2 * search.STALE_AFTER_S), ("alive-elsewhere", time.time())):
        trial = study.ask()
        storage.set_trial_system_attr(trial._trial_id, search.WORKER_ATTR, {"host": host, "pid": 1, "started": "0"})
        storage.set_trial_system_attr(trial._trial_id, search.HEARTBEAT_ATTR, beat)
    study.ask()  # a worker killed before it named itself in its new trial
    dead, alive, unnamed = study.get_trials()
    assert "no heartbeat" in search._stale_reason(dead, time.time())
    assert search._stale_reason(alive, time.time()) is None
    assert "died while claiming it" in search._stale_reason(unnamed, time.time())
    search._interrupt_stale(study, storage)
    dead, alive, unnamed = study.get_trials()
    assert [t.state.name for t in (dead, alive, unnamed)] == ["FAIL", "RUNNING", "FAIL"]
    assert INTERRUPTED_ATTR in dead.system_attrs and INTERRUPTED_ATTR in unnamed.system_attrs


def test_a_torn_last_record_is_cut_off_before_the_next_append(tmp_path):
    journal, calls = tmp_path / "study.journal", []

    def objective(params, report):
        calls.append(params)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return -params["learning_rate"]

    with pytest.raises(KeyboardInterrupt):
        run_search(objective, SPACE, 4, "maximize", seed=0, journal=journal, name="g--t")
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"dead","tri')  # a writer killed mid-record
    result = run_search(objective, SPACE, 4, "maximize", seed=0, journal=journal, name="g--t")
    assert len(result["trials"]) == 4 and len(calls) == 5
    assert all(json.loads(line) for line in journal.read_text().splitlines())


def test_no_trials_touch_no_storage(tmp_path):
    result = run_search(None, SPACE, 0, "maximize", seed=0, journal=tmp_path / "study.journal", name="g")
    assert result["searched"] is False and result["trials"] == [] and list(tmp_path.iterdir()) == []
