"""Every job's console output also lands in its Snakemake log file; every job leaves a
record, and a failing job invalidates the results built on it (see invalidate.py)."""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, TextIO

from .invalidate import invalidate_downstream, new_record, write_record


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        """Libraries that captured sys.stderr (absl's handler) close it at exit: the console
        streams are not ours to close, and the log file is closed by `logged`."""


@contextlib.contextmanager
def logged(smk) -> Iterator[None]:
    """Run a job's body: output teed into its log and a job record written (see
    invalidate.py); on failure the traceback is logged and its stale downstream removed."""
    record = new_record(smk.rule, dict(smk.wildcards.items()), _paths(smk.input), _paths(smk.output))
    write_record(record)
    with _teed(smk.log[0] if smk.log else None):
        try:
            yield
        except BaseException:
            _finish(record, "failed")
            invalidate_downstream(smk.rule, record["outputs"])
            raise
        _finish(record, "ok")


def _paths(named_list) -> list[str]:
    return [str(p) for p in named_list]


def _finish(record: dict, status: str) -> None:
    # The modules loaded tell tests which code a rule really ran (see codehash.py).
    record.update(status=status, end=time.time(), modules=sorted(n for n in sys.modules if n.startswith("wattpeft")))
    write_record(record)


@contextlib.contextmanager
def _teed(log_path: str | None) -> Iterator[None]:
    if log_path is None:
        yield
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log:
        old_out, old_err = sys.stdout, sys.stderr
        tee_out, tee_err = _Tee(old_out, log), _Tee(old_err, log)
        sys.stdout, sys.stderr = tee_out, tee_err
        try:
            yield
        except BaseException:
            log.write(traceback.format_exc())
            raise
        finally:
            # A library may keep a reference to the tee: from now on it writes to the console only.
            tee_out.streams, tee_err.streams = (old_out,), (old_err,)
            sys.stdout, sys.stderr = old_out, old_err
