"""Every job's console output also lands in its Snakemake log file; a failing job also
invalidates the results that depend on it (see invalidate.py)."""

from __future__ import annotations

import contextlib
import sys
import traceback
from pathlib import Path
from typing import Iterator, TextIO


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
    """Run a job's body: output teed into its log, and on failure the traceback logged and
    its stale downstream results removed."""
    with _teed(smk.log[0] if smk.log else None):
        try:
            yield
        except BaseException:
            from .invalidate import invalidate_downstream

            invalidate_downstream(smk.rule, dict(smk.wildcards.items()), smk.config)
            raise


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
