"""Optuna search, as seed 001 asks: search first on the validation split, then one final
run per seed with the best parameters (only that run is logged and reported).

A trial that diverges is recorded as failed, with its error, and the search goes on; a
trial whose validation score falls below the median of earlier trials at the same epoch
is pruned (optuna's MedianPruner). Only when no trial completes does the search fail.

With `journal` (the stage passes results/search/{group}/study.journal) the study lives in
optuna's journal file: an append-only log, each record written and fsync'd under a file
lock, so a study resumes after a kill and several worker processes can share it.

- Done means `n_trials` *counted* trials finished (COMPLETE, PRUNED or FAIL), across every
  worker. A new trial is claimed under a second lock (`<journal>.claim`, flock: the kernel
  drops it when its holder dies) that counts the trials first, so workers together run
  exactly `n_trials`; a worker with nothing left to claim waits for the running ones.
- An *interrupted* trial (its worker was killed, or the objective raised something that is
  not a bad trial: KeyboardInterrupt, a bug) is marked FAIL with `wattpeft:interrupted` and
  is not counted, so the resumed search runs it again with the same seed. A trial left
  RUNNING is interrupted when its worker is gone: same host name and that process (pid and
  start time) no longer runs, or, from another host, no heartbeat for STALE_AFTER_S (each
  worker beats every HEARTBEAT_S; optuna's own heartbeat is RDB-only), or it died between
  creating the trial and naming itself in it (both happen under the claim lock). A live worker whose trial
  was so failed (hosts sharing a name across pid namespaces, clocks apart by minutes) drops
  that result with a warning.
- Trial k (k-th counted) samples with a seed derived from (seed, k): two workers never draw
  the same point, and a search resumed on one worker draws what an uninterrupted one would.
- A torn last record (a writer killed mid-line) is cut off before the next append.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

# Trials that always run to the end before the pruner compares against them.
PRUNER_STARTUP_TRIALS = 2
HEARTBEAT_S = 60.0  # a running trial's worker records it is alive this often
STALE_AFTER_S = 600.0  # a RUNNING trial with no heartbeat for this long (another host) is interrupted
WAIT_S = 0.5  # how often a worker with nothing left to claim looks at the running trials

WORKER_ATTR, HEARTBEAT_ATTR, INTERRUPTED_ATTR = "wattpeft:worker", "wattpeft:heartbeat", "wattpeft:interrupted"

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


def study_name(group_id: str, identity: dict[str, Any]) -> str:
    """`{group}--{hash}`: the hash covers what defines the search (search space, n_trials,
    seed, direction, the training config, data, code), so a changed one never resumes an
    old study; it starts a new one beside it in the same journal."""
    from ..utils.io import stable_hash

    return f"{group_id}--{stable_hash(identity, 12)}"


def run_search(
    objective: Callable[[dict[str, Any], Report], float],
    space: dict[str, dict[str, Any]],
    n_trials: int,
    direction: str,
    seed: int,
    failures: tuple[type[BaseException], ...] = (),
    *,
    journal: str | Path | None = None,
    name: str = "search",
) -> dict[str, Any]:
    """Best parameters and every counted trial. `objective(params, report)` trains and
    returns the score; it calls `report(epoch, value)` after each validation, which raises
    optuna.TrialPruned for a hopeless trial. Exceptions in `failures` fail only their trial.
    `journal`: the journal file that keeps study `name` (None: in memory, one process)."""
    if n_trials == 0 or not space:
        reason = "n_trials is 0 (mode trial, or no search asked)" if n_trials == 0 else "empty search space"
        return {"params": {}, "searched": False, "reason": reason, "trials": [], "search_space": space}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = Path(journal) if journal is not None else None
    storage = _journal_storage(journal) if journal else optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        load_if_exists=True,
        direction=direction,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
    )
    claim_lock = (lambda: _flock(journal.with_name(journal.name + ".claim"))) if journal else contextlib.nullcontext
    while True:
        with claim_lock():
            trial, done = _claim(study, storage, n_trials, seed, shared=journal is not None)
        if done:
            break
        if trial is None:  # every slot is taken: wait for the other workers' trials
            time.sleep(WAIT_S)
            continue
        _run_trial(study, storage, trial, objective, space, failures, beat=journal is not None)

    trials = sorted(_counted(study.get_trials(deepcopy=False)), key=lambda t: t.number)
    records = [_trial_record(t) for t in trials]
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise RuntimeError(f"every one of {n_trials} search trials failed or was pruned: {records}")
    return {
        "params": dict(study.best_params),
        "searched": True,
        "direction": direction,
        "best_value": study.best_value,
        "search_seed": seed,
        "search_space": space,
        "trials": records,
        "interrupted": [
            {"number": t.number, "reason": t.system_attrs[INTERRUPTED_ATTR]}
            for t in study.get_trials(deepcopy=False) if INTERRUPTED_ATTR in t.system_attrs
        ],
        "study": {"name": study.study_name, "storage": str(journal)} if journal else None,
    }


def _claim(study: optuna.Study, storage, n_trials: int, seed: int, shared: bool) -> tuple[optuna.Trial | None, bool]:
    """(a new trial, False) when a counted slot is free, (None, True) when n_trials counted
    trials have finished, (None, False) while other workers still run the last ones."""
    if shared:
        _interrupt_stale(study, storage)
    counted = _counted(study.get_trials(deepcopy=False))
    if len(counted) >= n_trials:
        return None, sum(t.state.is_finished() for t in counted) >= n_trials
    study.sampler = optuna.samplers.TPESampler(seed=_slot_seed(seed, len(counted)))
    trial = study.ask()
    if shared:
        storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, _this_worker())
        storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
    return trial, False


def _run_trial(study, storage, trial, objective, space, failures, beat: bool) -> None:
    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation {value:.4g} at epoch {epoch} is below the median of earlier trials")

    outcome: dict[str, Any] = {"state": TrialState.FAIL}
    try:
        with _heartbeat(storage, trial._trial_id) if beat else contextlib.nullcontext():
            value = objective(suggest(trial, space), report)
        if value is None or not math.isfinite(value):
            trial.set_user_attr("failure", f"the objective returned {value!r}")
        else:
            outcome = {"values": value}
    except optuna.TrialPruned:
        outcome = {"state": TrialState.PRUNED}
    except failures as err:
        trial.set_user_attr("failure", f"{type(err).__name__}: {err}")
    except BaseException as err:  # not a bad trial: stop, and let a resumed search run it again
        with contextlib.suppress(UpdateFinishedTrialError):
            storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, f"{type(err).__name__}: {err}")
        raise
    finally:
        _tell(study, storage, trial, **outcome)


def _tell(study: optuna.Study, storage, trial: optuna.Trial, **outcome) -> None:
    try:
        if not storage.get_trial(trial._trial_id).state.is_finished():
            study.tell(trial, **outcome)
            return
    except UpdateFinishedTrialError:
        pass
    warnings.warn(f"search trial {trial.number} was taken for dead by another worker; its result is dropped")


def _counted(trials) -> list[optuna.trial.FrozenTrial]:
    """Trials that fill one of the n_trials slots: running or finished, not interrupted."""
    return [t for t in trials if t.state != TrialState.WAITING and INTERRUPTED_ATTR not in t.system_attrs]


def _slot_seed(seed: int, slot: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{slot}".encode()).digest()[:4], "big")


def _interrupt_stale(study: optuna.Study, storage) -> None:
    """Fail the RUNNING trials whose worker is gone. Called under the claim lock."""
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(trial, now)
        if reason is not None:
            storage.set_trial_system_attr(trial._trial_id, INTERRUPTED_ATTR, reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _stale_reason(trial: optuna.trial.FrozenTrial, now: float) -> str | None:
    worker = trial.system_attrs.get(WORKER_ATTR)
    if worker is None:  # a worker names itself before it lets go of the claim lock, held now
        return "its worker died while claiming it"
    if worker["host"] == socket.gethostname():
        if _process_start(worker["pid"]) != worker["started"]:
            return f"its worker (pid {worker['pid']} on {worker['host']}) is gone"
        return None
    last = trial.system_attrs.get(HEARTBEAT_ATTR) or trial.datetime_start.timestamp()
    if now - last > STALE_AFTER_S:
        return f"no heartbeat from its worker (pid {worker['pid']} on {worker['host']}) for {now - last:.0f} s"
    return None


def _this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """A token that names the process `pid` (its start time where /proc tells it); None
    when no such process runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "running"
    state, *fields = stat.rsplit(")", 1)[1].split()
    return None if state in ("Z", "X") else fields[18]  # field 22 of proc(5): starttime


@contextlib.contextmanager
def _heartbeat(storage, trial_id: int) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except (UpdateFinishedTrialError, KeyError):
                return

    thread = threading.Thread(target=beat, name=f"search-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _journal_storage(path: Path) -> optuna.storages.JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(_JournalFile(path))


class _JournalFile(optuna.storages.journal.JournalFileBackend):
    """optuna's journal file (append-only, each append under its lock and fsync'd), which
    first cuts off a torn last record: a writer killed mid-line leaves one, and the next
    record appended to it would make both unreadable. Readers skip a torn last line."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._journal_lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
        super().__init__(str(path), lock_obj=self._journal_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        self._journal_lock.acquire()
        try:
            with open(self._path, "rb+") as handle:
                handle.seek(_end_of_last_record(handle))
                handle.truncate()
                handle.write(text.encode())
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            self._journal_lock.release()


def _end_of_last_record(handle) -> int:
    """Offset just past the file's last newline (0 if none)."""
    end = handle.seek(0, os.SEEK_END)
    if end:
        handle.seek(end - 1)
        if handle.read(1) == b"\n":  # the usual case: nothing torn
            return end
    while end > 0:
        start = max(0, end - 65536)
        handle.seek(start)
        cut = handle.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "failure": trial.user_attrs.get("failure"),
    }
