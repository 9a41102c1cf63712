"""Multi-process training on one node: `launch` starts N worker processes, one per CUDA
device (NCCL), or N CPU processes talking gloo (tests). Each worker sets what
torch.distributed reads (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK), so the
`Accelerator` the trainer builds sees a multi-process run and the trainer wraps the model
in DDP (training/trainer.py). Rank 0's return value comes back; a worker's exception is
raised again here, with its type and message.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


def require_cuda_devices(processes: int) -> None:
    """One training process per GPU: the job's `gpu` resource must not exceed what it sees."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if processes > visible:
        raise RuntimeError(
            f"the job asks for gpu: {processes} (one training process per GPU) but only {visible} "
            "CUDA device(s) are visible; lower the rule's gpu resource in the profile or run it where "
            f"{processes} GPUs are allocated"
        )


def launch(fn: Callable[..., Any], args: tuple = (), processes: int = 2, *, cpu: bool = False) -> Any:
    """Run `fn(*args)` in `processes` processes of one DDP group; return rank 0's result.
    `cpu=True`: CPU processes with the gloo backend (CUDA hidden from them), for tests;
    otherwise one CUDA device per process (NCCL), and there must be that many. `fn` and
    `args` must be picklable (a module-level function): workers are spawned, not forked."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if not cpu:
        require_cuda_devices(processes)
    with tempfile.TemporaryDirectory(prefix="wattpeft-ddp-") as tmp:
        try:
            mp.start_processes(_worker, args=(processes, _free_port(), cpu, fn, args, tmp),
                               nprocs=processes, start_method="spawn", join=True)
        except mp.ProcessRaisedException as failure:
            error = _load(Path(tmp) / f"error-{failure.error_index}.pkl")
            if isinstance(error, BaseException):
                raise error from failure
            raise
        result = Path(tmp) / "result.pkl"
        if not result.is_file():
            raise RuntimeError("the training processes finished but rank 0 returned no result")
        return _load(result)


def _worker(rank: int, world: int, port: int, cpu: bool, fn, args, tmp: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything initialises CUDA
    try:
        result = fn(*args)
    except BaseException as error:
        _dump(Path(tmp) / f"error-{rank}.pkl", error)
        raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        _dump(Path(tmp) / "result.pkl", result)


def _dump(path: Path, value: Any) -> None:
    """Pickle `value` for the launcher. An exception that cannot be pickled is replaced by a
    RuntimeError carrying its type and message; a result that cannot be pickled is an error."""
    try:
        path.write_bytes(pickle.dumps(value))
    except Exception as err:
        if not isinstance(value, BaseException):
            raise RuntimeError(f"rank 0's result cannot be sent to the launcher: {err}") from err
        path.write_bytes(pickle.dumps(RuntimeError(f"{type(value).__name__}: {value}")))


def _load(path: Path) -> Any:
    """What a worker dumped, or None when it dumped nothing (it died before writing)."""
    return pickle.loads(path.read_bytes()) if path.is_file() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
