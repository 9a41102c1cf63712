"""Job records, and what a failed job makes stale.

Every job (through `logging.logged`) writes one record to `logs/jobs/`: its rule,
wildcards, input and output paths, start and end times, status, and the wattpeft modules
it had loaded. The records are the workflow's own, rule-agnostic view of the DAG that
ran: which outputs were built from which inputs.

Why invalidation is needed: Snakemake deletes a failed job's outputs, but when outputs
built from them still exist it treats the missing intermediate as not needed and reports
"Nothing to be done", keeping results computed from the old inputs. So a failing job
removes every existing output recorded as built, directly or not, from its own outputs;
the next run rebuilds that whole chain. It follows the records, not a list of rules, so a
rule added later is covered, and a job with nothing downstream (a figure, a learning
curve) removes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from ..utils.io import read_json, remove_path, stable_hash, write_json

JOBS_DIR = Path("logs/jobs")


def _norm(path: str | Path) -> str:
    return os.path.normpath(str(path))


def record_path(rule: str, wildcards: dict[str, str], jobs_dir: Path = JOBS_DIR) -> Path:
    return Path(jobs_dir) / f"{rule}--{stable_hash(wildcards, 12)}.json"


def write_record(record: dict[str, Any], jobs_dir: Path = JOBS_DIR) -> Path:
    path = record_path(record["rule"], record["wildcards"], jobs_dir)
    write_json(path, record)
    return path


def new_record(rule: str, wildcards: dict[str, str], inputs: Iterable[str], outputs: Iterable[str]) -> dict[str, Any]:
    return {
        "rule": rule,
        "wildcards": dict(wildcards),
        "inputs": [_norm(p) for p in inputs],
        "outputs": [_norm(p) for p in outputs],
        "start": time.time(),
        "end": None,
        "status": "running",
        "pid": os.getpid(),
        "host": os.uname().nodename,
    }


def read_records(jobs_dir: Path = JOBS_DIR) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(jobs_dir).glob("*.json")):
        try:
            records.append(read_json(path))
        except (OSError, ValueError):
            continue  # a record being replaced right now: it is about a running job
    return records


def downstream_outputs(failed_outputs: Iterable[str], records: list[dict[str, Any]]) -> list[str]:
    """Outputs of finished jobs built, directly or through others, from `failed_outputs`."""
    stale: list[str] = []
    frontier = {_norm(p) for p in failed_outputs}
    seen = set(frontier)
    while frontier:
        consumers = [r for r in records if r.get("status") == "ok" and frontier & set(r["inputs"])]
        frontier = {out for r in consumers for out in r["outputs"]} - seen
        seen |= frontier
        stale += sorted(frontier)
    return stale


def invalidate_downstream(rule: str, outputs: Iterable[str], jobs_dir: Path = JOBS_DIR) -> list[Path]:
    """Remove the existing results built from a failed job's outputs; returns what was removed."""
    removed = [Path(p) for p in downstream_outputs(outputs, read_records(jobs_dir)) if remove_path(Path(p))]
    if removed:
        print(f"[wattpeft] {rule} failed: removed {len(removed)} stale downstream result(s): "
              + ", ".join(str(p) for p in removed), file=sys.stderr)
    return removed
