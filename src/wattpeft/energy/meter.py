"""Energy measurement windows: `begin_window(key)` / `end_window(key)` -> Measurement.

Why a thin pynvml layer and not Zeus's `ZeusMonitor`: the window API is the same
idea (two reads of NVML's cumulative energy counter; power polling on GPUs that
lack it; RAPL for the CPU), but we need things Zeus does not give us: a source
label on every number (`nvml_counter`, `nvml_power`, `rapl`, `estimated`,
`unavailable`) with the reason when there is none; idle-power subtraction
(profiler.py); a count of counter updates per window; an NVML counter that goes
backwards treated as a reset (window discarded), RAPL's as a wrap (unwrapped);
flagging, rather than silently replacing with power x time, windows too short
for the counter to move; never a TDP guess unless asked for; and a seam small
enough to fake in tests (a stand-in `pynvml` module, a temporary powercap
folder, an injected clock). It also costs one dependency (nvidia-ml-py) instead
of Zeus and its own.

    meter = make_meter("cuda")            # or "cpu", or "auto"
    with meter.window("forward") as m:
        for _ in range(n):
            run_one_iteration()
            meter.observe("forward")      # optional: counts counter updates
    m.energy_j, m.duration_s, m.source, m.reason, m.flags, m.peak_power_w, m.counter_updates

Long windows matter: the counters advance in discrete steps, so a window should
span many of them (the profiler grows each window until it does; see
profiler.py). `observe(key)` reads the counter inside an open window and counts
how often the reading changed (`Measurement.counter_updates`; None for sources
without a counter). A window whose counter did not move is flagged `zero_delta`
and its energy is NaN (never replaced by power x time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from wattpeft.energy.backends import (
    ESTIMATED,
    NAN,
    POWERCAP_ROOT,
    UNAVAILABLE,
    Backend,
    EstimatedBackend,
    UnavailableBackend,
    open_nvml,
    open_rapl,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class Measurement:
    """One window's result. energy_j is NaN whenever it is not known; `reason` says why."""

    key: str
    energy_j: float
    duration_s: float
    source: str
    reason: str | None = None
    peak_power_w: float = NAN
    power_samples: int = 0
    flags: tuple[str, ...] = ()
    counter_updates: int | None = None  # changes of the counter reading seen; None: no counter

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else NAN

    @property
    def ok(self) -> bool:
        return math.isfinite(self.energy_j)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"mean_power_w": self.mean_power_w}


class PowerPoller:
    """Samples instantaneous power (W) with timestamps; optionally from a background thread."""

    def __init__(self, read_w: Callable[[], float], clock: Clock, interval_s: float | None):
        self.read_w = read_w
        self.clock = clock
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> None:
        try:
            watts = float(self.read_w())
        except Exception as exc:  # a failed poll leaves a gap, it must not kill the workload
            log.debug("power poll failed: %s", exc)
            return
        with self._lock:
            self._samples.append((self.clock(), watts))

    def between(self, t0: float, t1: float) -> list[tuple[float, float]]:
        with self._lock:
            return [(t, w) for t, w in self._samples if t0 <= t <= t1]

    def start(self) -> None:
        if self.interval_s is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="wattpeft-power-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()


@dataclass
class _OpenWindow:
    t0: float
    readings: list[Any]  # distinct consecutive readings, the opening one first

    def see(self, reading: Any) -> None:
        if reading != self.readings[-1]:
            self.readings.append(reading)

    @property
    def updates(self) -> int:
        return len(self.readings) - 1


class EnergyMeter:
    """Measurement windows over one backend, with CUDA sync at the edges and power polling.

    Several windows (distinct keys) may be open at once. When the backend can read
    power, a light thread polls it while any window is open (every `poll_interval_s`;
    None: only at the window edges and on `sample_power()`), which gives peak power
    for every backend that has a reading and the integral for `nvml_power`.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        device: str = "cpu",
        clock: Clock = time.perf_counter,
        sync: Callable[[], None] | None = None,
        poll_interval_s: float | None = 0.1,
    ):
        self.backend = backend
        self.device = device
        self.clock = clock
        self._sync = sync
        self._open: dict[str, _OpenWindow] = {}
        self._poller = PowerPoller(backend.power_w, clock, poll_interval_s) if backend.has_power else None

    @property
    def source(self) -> str:
        return self.backend.source

    @property
    def reason(self) -> str | None:
        return self.backend.reason

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA) so that clocks and counters see it finished."""
        if self._sync is not None:
            self._sync()

    def begin_window(self, key: str) -> None:
        if key in self._open:
            raise ValueError(f"window {key!r} is already open")
        self.synchronize()
        t0 = self.clock()
        self._open[key] = _OpenWindow(t0, [self.backend.read()])
        if self._poller is not None:
            self._poller.sample_once()
            self._poller.start()

    def observe(self, key: str) -> int | None:
        """Read the counter inside open window `key`; how many times it has changed so far.

        None when the source has no cumulative counter. Observing after every
        iteration tells the profiler when a window spans enough counter updates, and
        catches an NVML reset that the closing read alone would miss.
        """
        window = self._window(key)
        if not self.backend.has_counter:
            return None
        window.see(self.backend.read())
        return window.updates

    def elapsed_s(self, key: str) -> float:
        """Seconds since open window `key` began."""
        return self.clock() - self._window(key).t0

    def end_window(self, key: str) -> Measurement:
        self._window(key)  # KeyError before any read if the window was never begun
        self.synchronize()
        if self._poller is not None:
            self._poller.sample_once()
        reading = self.backend.read()
        t1 = self.clock()
        window = self._open.pop(key)
        window.see(reading)
        samples = self._poller.between(window.t0, t1) if self._poller is not None else []
        if not self._open and self._poller is not None:
            self._poller.stop()
            self._poller.clear()
        duration = t1 - window.t0
        energy, flags, reason = self.backend.energy_of(window.readings, duration, samples)
        return Measurement(
            key=key,
            energy_j=energy,
            duration_s=duration,
            source=self.source,
            reason=reason,
            peak_power_w=max((w for _, w in samples), default=NAN),
            power_samples=len(samples),
            flags=flags,
            counter_updates=window.updates if self.backend.has_counter else None,
        )

    def _window(self, key: str) -> _OpenWindow:
        if key not in self._open:
            raise KeyError(f"window {key!r} was never begun")
        return self._open[key]

    @contextlib.contextmanager
    def window(self, key: str) -> Iterator[Measurement]:
        """`with meter.window(key) as m:` ... m holds the result once the block exits."""
        pending = Measurement(key, NAN, NAN, self.source, reason="window still open")
        self.begin_window(key)
        try:
            yield pending
        finally:
            vars(pending).update(vars(self.end_window(key)))

    def sample_power(self) -> None:
        """Take one power sample now (the polling thread calls the same)."""
        if self._poller is not None:
            self._poller.sample_once()

    def power_w(self) -> float:
        return self.backend.power_w()

    def temperature_c(self) -> float:
        return self.backend.temperature_c()

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self.backend.close()

    def __enter__(self) -> "EnergyMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_meter(
    device: str = "auto",
    allow_estimate: bool = False,
    tdp_watts: float | None = None,
    *,
    clock: Clock = time.perf_counter,
    poll_interval_s: float | None = 0.1,
    powercap_root=POWERCAP_ROOT,
) -> EnergyMeter:
    """The best meter for where the workload runs.

    device: "auto" (CUDA if torch sees a GPU, else the CPU), "cuda", "cuda:N", "gpu" or "cpu".
    A CUDA device is read through NVML (energy counter, else power polling); the CPU
    through RAPL. With neither, the meter is `unavailable` (energy NaN, reason given),
    unless `allow_estimate` is True *and* `tdp_watts` is given: then `estimated`
    (tdp_watts x time). A real counter always wins over an estimate.
    """
    target = resolve_device(device)
    backend = open_nvml(_cuda_index(target)) if target.startswith("cuda") else open_rapl(powercap_root)
    backend = _maybe_estimate(backend, allow_estimate, tdp_watts)
    if backend.source in (UNAVAILABLE, ESTIMATED):
        log.warning("energy source for %s is %s: %s", target, backend.source, backend.reason)
    return EnergyMeter(backend, device=target, clock=clock, sync=_cuda_sync(target), poll_interval_s=poll_interval_s)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda:N' when torch has CUDA, else 'cpu'; 'cuda'/'gpu' -> 'cuda:<current>'."""
    device = device.strip().lower()
    if device == "auto":
        device = "cuda" if _torch_cuda_available() else "cpu"
    if device in ("cuda", "gpu"):
        return f"cuda:{_current_cuda_index()}"
    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or gpu")


def _maybe_estimate(backend: Backend, allow_estimate: bool, tdp_watts: float | None) -> Backend:
    if backend.source != UNAVAILABLE:
        return backend
    if allow_estimate and tdp_watts is not None:
        return EstimatedBackend(tdp_watts, backend.reason)
    if allow_estimate:
        return UnavailableBackend(f"{backend.reason}; allow_estimate is set but tdp_watts is not")
    if tdp_watts is not None:
        return UnavailableBackend(f"{backend.reason}; tdp_watts given but allow_estimate is False")
    return backend


def _cuda_index(target: str) -> int:
    return int(target.split(":")[1])


def _torch_cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _current_cuda_index() -> int:
    if _torch_cuda_available():
        import torch

        return torch.cuda.current_device()
    return 0


def _cuda_sync(target: str) -> Callable[[], None] | None:
    if not target.startswith("cuda") or not _torch_cuda_available():
        return None
    import torch

    return lambda: torch.cuda.synchronize(target)
