"""Energy sources behind the meter: NVML counter, NVML power polling, CPU RAPL, estimate, none.

Each backend answers three questions for a measurement window: what to read
(`read`, at the window's edges and, for a cumulative counter, whenever the meter
observes it), how many joules the readings seen in the window add up to
(`energy_of`), and what the device draws right now (`power_w`, NaN when it cannot
say). The meter owns the clock, the window book-keeping and the power-polling
thread; backends only talk to hardware, so a fake `pynvml` module or a fake
powercap folder is all a test needs.

A counter going backwards means different things per source: NVML's is an
unsigned 64-bit count of mJ (2**64 mJ is about 585,000 years at 1 kW), so it never
wraps in practice and a lower reading is a reset (driver reload, GPU reset):
the window is discarded (`counter_reset`). A RAPL zone does wrap, at its
`max_energy_range_uj`, and is unwrapped (`counter_wrapped`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

NAN = float("nan")

# Source labels: every energy number carries exactly one of these.
NVML_COUNTER = "nvml_counter"
NVML_POWER = "nvml_power"
RAPL = "rapl"
ESTIMATED = "estimated"
UNAVAILABLE = "unavailable"
SOURCES = (NVML_COUNTER, NVML_POWER, RAPL, ESTIMATED, UNAVAILABLE)

# Window flags.
ZERO_DELTA = "zero_delta"  # counter did not move: window shorter than its update period
COUNTER_WRAPPED = "counter_wrapped"  # RAPL passed max_energy_range_uj; unwrapped, energy kept
COUNTER_RESET = "counter_reset"  # NVML counter went backwards (driver reload, GPU reset); energy NaN
TOO_FEW_POWER_SAMPLES = "too_few_power_samples"
TOO_FEW_COUNTER_UPDATES = "too_few_counter_updates"  # set by the profiler's minimum-window rule

EnergyResult = tuple[float, tuple[str, ...], "str | None"]  # joules, flags, reason


def trapezoid_energy_j(samples: Sequence[tuple[float, float]]) -> float:
    """Integral of (time s, power W) samples by the trapezoid rule; NaN with fewer than two."""
    if len(samples) < 2:
        return NAN
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


class Backend:
    """Base: no counter, no power reading. Subclasses override what their hardware offers."""

    source = UNAVAILABLE
    reason: str | None = None
    has_power = False
    has_counter = False  # a cumulative energy counter whose changes the meter can count

    def read(self) -> Any:
        return None

    def energy_of(self, readings: Sequence[Any], duration_s: float, power_samples) -> EnergyResult:
        """Joules over a window, from its distinct consecutive readings (the opening read first)."""
        return NAN, (), self.reason

    def power_w(self) -> float:
        return NAN

    def temperature_c(self) -> float:
        return NAN

    def info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class UnavailableBackend(Backend):
    def __init__(self, reason: str):
        self.reason = reason


class EstimatedBackend(Backend):
    """tdp_watts x wall time. Only built when the caller asked for it; always labelled."""

    source = ESTIMATED

    def __init__(self, tdp_watts: float, why_no_counter: str):
        if not tdp_watts > 0:
            raise ValueError(f"tdp_watts must be positive, got {tdp_watts}")
        self.tdp_watts = float(tdp_watts)
        self.reason = f"estimate: {self.tdp_watts:g} W (TDP) x wall time; no counter ({why_no_counter})"

    def energy_of(self, readings, duration_s, power_samples) -> EnergyResult:
        return self.tdp_watts * duration_s, (), self.reason

    def info(self) -> dict[str, Any]:
        return {"tdp_watts": self.tdp_watts}


# ---------------------------------------------------------------- NVML


class _NvmlDevice(Backend):
    """Shared NVML plumbing: one device handle, power and temperature reads, device facts."""

    has_power = True

    def __init__(self, nvml, handle):
        self.nvml = nvml
        self.handle = handle

    def power_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def temperature_c(self) -> float:
        return _num(self._query(self.nvml.nvmlDeviceGetTemperature, self.handle, self.nvml.NVML_TEMPERATURE_GPU))

    def info(self) -> dict[str, Any]:
        nvml, h = self.nvml, self.handle
        mig = self._query(nvml.nvmlDeviceGetMigMode, h)
        processes = self._query(nvml.nvmlDeviceGetComputeRunningProcesses, h)
        limit_mw = self._query(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        return {
            "gpu_name": _text(self._query(nvml.nvmlDeviceGetName, h)),
            "gpu_uuid": _text(self._query(nvml.nvmlDeviceGetUUID, h)),
            "driver_version": _text(self._query(nvml.nvmlSystemGetDriverVersion)),
            "power_limit_w": NAN if limit_mw is None else limit_mw / 1000.0,
            "gpu_temperature_c": self.temperature_c(),
            "sm_clock_mhz": _num(self._query(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": _num(self._query(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM)),
            # nvmlDeviceGetMigMode returns (current, pending); unsupported on pre-Ampere GPUs.
            "mig_enabled": None if mig is None else bool(mig[0]),
            # NVML lists host PIDs; inside a container our own PID differs, so report the count.
            "gpu_compute_processes": None if processes is None else len(processes),
        }

    def _query(self, fn, *args):
        # Device facts are logged, never required: an unsupported query is recorded as missing.
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


class NvmlCounterBackend(_NvmlDevice):
    """nvmlDeviceGetTotalEnergyConsumption: mJ since driver load (Volta and newer)."""

    source = NVML_COUNTER
    has_counter = True

    def read(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def energy_of(self, readings: Sequence[int], duration_s, power_samples) -> EnergyResult:
        # Any backward step, even one the closing read has climbed past again, spoils the window.
        for before, after in zip(readings, readings[1:]):
            if after < before:
                reason = (
                    f"energy counter went back from {before} to {after} mJ within the window: a reset "
                    "(driver reload or GPU reset), not a wrap; the window's energy is unknown"
                )
                return NAN, (COUNTER_RESET,), reason
        delta_mj = readings[-1] - readings[0]
        if delta_mj == 0:
            reason = (
                f"energy counter did not advance over {duration_s:.4f} s: the window is shorter "
                "than the counter's update period; lengthen it"
            )
            return NAN, (ZERO_DELTA,), reason
        return delta_mj / 1000.0, (), None


class NvmlPowerBackend(_NvmlDevice):
    """No energy counter (pre-Volta): integrate polled nvmlDeviceGetPowerUsage over the window."""

    source = NVML_POWER

    def energy_of(self, readings, duration_s, power_samples) -> EnergyResult:
        if len(power_samples) < 2:
            reason = f"only {len(power_samples)} power sample(s) in a {duration_s:.4f} s window"
            return NAN, (TOO_FEW_POWER_SAMPLES,), reason
        return trapezoid_energy_j(power_samples), (), None


def load_nvml():
    """Import pynvml lazily so a test can put a fake module in sys.modules first."""
    import pynvml

    return pynvml


def open_nvml(index: int = 0) -> Backend:
    """The best NVML backend for CUDA device `index`, or UnavailableBackend saying why."""
    try:
        nvml = load_nvml()
    except ImportError as exc:
        return UnavailableBackend(f"pynvml cannot be imported ({exc}); install nvidia-ml-py")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return UnavailableBackend(f"nvmlInit failed: {exc} (no NVIDIA driver or GPU visible)")
    try:
        handle = _nvml_handle(nvml, index)
    except (nvml.NVMLError, ValueError) as exc:
        nvml.nvmlShutdown()
        return UnavailableBackend(f"no NVML handle for CUDA device {index}: {exc}")
    return _best_nvml_backend(nvml, handle)


def _best_nvml_backend(nvml, handle) -> Backend:
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return NvmlCounterBackend(nvml, handle)
    except nvml.NVMLError:
        pass
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
        return NvmlPowerBackend(nvml, handle)
    except nvml.NVMLError as exc:
        nvml.nvmlShutdown()
        return UnavailableBackend(f"GPU reports neither an energy counter nor power usage: {exc}")


def _nvml_handle(nvml, index: int):
    """NVML numbers GPUs physically; CUDA numbers the visible ones. Map through the UUID."""
    entry = _torch_gpu_uuid(index) or _visible_device_entry(index)
    if entry is None:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    if entry.startswith("MIG-"):
        raise ValueError(f"{entry} is a MIG instance; NVML energy covers the whole GPU only")
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry if entry.startswith("GPU-") else f"GPU-{entry}")


def _torch_gpu_uuid(index: int) -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_properties(index).uuid)
    except (ImportError, AttributeError, RuntimeError, AssertionError):
        pass
    return None


def _visible_device_entry(index: int) -> str | None:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return None
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if index >= len(entries):
        raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r} has no entry {index}")
    return entries[index]


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _num(value) -> float:
    return NAN if value is None else float(value)


# ---------------------------------------------------------------- RAPL

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+$")  # top-level zones; sub-zones (core, dram) are inside them


class RaplBackend(Backend):
    """Sum of the CPU package zones' energy_uj counters, each unwrapped at max_energy_range_uj."""

    source = RAPL
    has_counter = True

    def __init__(self, zones: list[Path]):
        self.zones = zones
        self.names = [_read_text(z / "name") or z.name for z in zones]
        self.max_range_uj = [int(_read_text(z / "max_energy_range_uj")) for z in zones]

    def read(self) -> tuple[int, ...]:
        return tuple(int(_read_text(z / "energy_uj")) for z in self.zones)

    def energy_of(self, readings, duration_s, power_samples) -> EnergyResult:
        # Unwrapped step by step, so a window observed often enough survives several wraps.
        total_uj, flags = 0, ()
        for start, end in zip(readings, readings[1:]):
            for s, e, max_range in zip(start, end, self.max_range_uj):
                if e < s:  # the zone's counter passed max_energy_range_uj and restarted at 0
                    e += max_range
                    flags = (COUNTER_WRAPPED,)
                total_uj += e - s
        if total_uj == 0:
            return NAN, (ZERO_DELTA,), f"RAPL counters did not advance over {duration_s:.4f} s"
        return total_uj / 1e6, flags, None

    def info(self) -> dict[str, Any]:
        return {"rapl_zones": ",".join(self.names)}


def open_rapl(root: str | Path = POWERCAP_ROOT) -> Backend:
    """RaplBackend over the readable package zones under `root`, or UnavailableBackend saying why."""
    root = Path(root)
    zones = sorted(p for p in root.glob("intel-rapl:*") if _PACKAGE_ZONE.match(p.name))
    # "psys" is the whole platform and already contains the packages: summing it would double count.
    zones = [z for z in zones if _read_text(z / "name") != "psys"]
    if not zones:
        return UnavailableBackend(f"no RAPL package zones under {root} (no powercap energy interface on this host)")
    unreadable = [z.name for z in zones if not (_readable(z / "energy_uj") and _readable(z / "max_energy_range_uj"))]
    if unreadable:
        return UnavailableBackend(
            f"RAPL energy_uj not readable by this user in {', '.join(unreadable)} under {root}; "
            "it needs root or a udev/chmod rule granting read access"
        )
    return RaplBackend(zones)


def _readable(path: Path) -> bool:
    try:
        int(_read_text(path))
        return True
    except (OSError, ValueError, TypeError):
        return False


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
