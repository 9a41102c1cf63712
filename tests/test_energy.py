"""Energy meter, profiler and GEMM helper against a fake NVML, a fake powercap tree and a fake clock."""

from __future__ import annotations

import importlib.util
import math
import sys
import time
import types
from pathlib import Path

import pytest

from wattpeft.energy import (
    ESTIMATED,
    SUMMARY_COLUMNS,
    NVML_COUNTER,
    NVML_POWER,
    RAPL,
    UNAVAILABLE,
    coefficient_of_variation,
    device_info,
    device_slug,
    make_meter,
    profile_workload,
    trapezoid_energy_j,
)
from wattpeft.energy.backends import COUNTER_RESET, COUNTER_WRAPPED, TOO_FEW_COUNTER_UPDATES, ZERO_DELTA
from wattpeft.energy.device import cpu_model_name, cpu_slug

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeNvmlError(Exception):
    pass


class FakeNvml(types.ModuleType):
    """Stand-in for the pynvml module: a scripted energy counter (mJ) and power (mW) tied to a fake clock.

    With `update_period_s`, the counter only shows the energy drawn so far when the
    clock crosses a multiple of the period, like the real counter's discrete updates.
    """

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, clock: FakeClock, *, has_counter=True, init_error=None, mig=0, processes=1):
        super().__init__("pynvml")
        self.clock = clock
        self.has_counter = has_counter
        self.init_error = init_error
        self.mig = mig
        self.processes = processes
        self.energy_mj = 1_000_000
        self.power_mw = 50_000
        self.shutdowns = 0
        self.update_period_s: float | None = None
        self._pending_mj = 0

    def advance(self, seconds: float, watts: float) -> None:
        """The GPU draws `watts` for `seconds`: the counter and the clock move together."""
        before = self.clock.t
        self.clock.t += seconds
        self._pending_mj += round(watts * seconds * 1000)
        self.power_mw = round(watts * 1000)
        period = self.update_period_s
        if period is None or math.floor(self.clock.t / period) > math.floor(before / period):
            self.energy_mj += self._pending_mj
            self._pending_mj = 0

    def nvmlInit(self):
        if self.init_error:
            raise FakeNvmlError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("handle", uuid)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.has_counter:
            raise FakeNvmlError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return "GPU-00000000-1111-2222-3333-444444444444"

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 41

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return {self.NVML_CLOCK_SM: 1980, self.NVML_CLOCK_MEM: 2619}[kind]

    def nvmlDeviceGetMigMode(self, handle):
        return (self.mig, self.mig)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [object()] * self.processes


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_nvml(monkeypatch, clock):
    fake = FakeNvml(clock)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def gpu_meter(clock, **kwargs):
    return make_meter("cuda:0", clock=clock, poll_interval_s=None, **kwargs)


# ---------------------------------------------------------------- NVML counter


def test_counter_window_is_counter_delta_in_joules(fake_nvml, clock):
    meter = gpu_meter(clock)
    assert meter.source == NVML_COUNTER
    with meter.window("w") as m:
        fake_nvml.advance(2.0, 250.0)
    assert m.energy_j == 500.0
    assert m.duration_s == 2.0
    assert m.source == NVML_COUNTER and m.reason is None and m.flags == ()
    assert m.mean_power_w == 250.0
    assert m.peak_power_w == 250.0  # power polled at the window edges too


def test_begin_end_window_and_overlapping_keys(fake_nvml, clock):
    meter = gpu_meter(clock)
    meter.begin_window("outer")
    fake_nvml.advance(1.0, 100.0)
    meter.begin_window("inner")
    fake_nvml.advance(3.0, 200.0)
    inner = meter.end_window("inner")
    outer = meter.end_window("outer")
    assert (inner.energy_j, inner.duration_s) == (600.0, 3.0)
    assert (outer.energy_j, outer.duration_s) == (700.0, 4.0)
    with pytest.raises(KeyError):
        meter.end_window("inner")


def test_nvml_counter_going_backwards_is_a_reset_not_a_wrap(fake_nvml, clock):
    meter = gpu_meter(clock)
    fake_nvml.energy_mj = (1 << 64) - 1_500  # near the top of the unsigned 64-bit range
    meter.begin_window("w")
    clock.t += 1.0
    fake_nvml.energy_mj = 2_500  # lower: the driver was reloaded, the count restarted
    m = meter.end_window("w")
    assert math.isnan(m.energy_j)  # not 4 J from a pretended wrap
    assert m.flags == (COUNTER_RESET,)
    assert "reset" in m.reason and "not a wrap" in m.reason


def test_reset_inside_a_window_is_caught_by_observe(fake_nvml, clock):
    meter = gpu_meter(clock)
    meter.begin_window("w")
    fake_nvml.advance(1.0, 100.0)
    meter.observe("w")
    fake_nvml.energy_mj = 500  # GPU reset: the count restarts ...
    meter.observe("w")
    fake_nvml.energy_mj = 5_000_000  # ... and climbs past the opening reading again
    m = meter.end_window("w")
    assert math.isnan(m.energy_j) and m.flags == (COUNTER_RESET,)


def test_observe_counts_counter_changes(fake_nvml, clock):
    meter = gpu_meter(clock)
    meter.begin_window("w")
    seen = []
    for _ in range(3):
        fake_nvml.advance(0.5, 100.0)
        seen.append(meter.observe("w"))
        seen.append(meter.observe("w"))  # no change since the last read: not an update
    clock.t += 0.25  # the closing read sees no further change
    assert meter.elapsed_s("w") == 1.75
    m = meter.end_window("w")
    assert seen == [1, 1, 2, 2, 3, 3]
    assert (m.counter_updates, m.energy_j, m.duration_s) == (3, 150.0, 1.75)
    fake_nvml.has_counter = False
    power_meter = gpu_meter(clock)
    with power_meter.window("p") as p:
        assert power_meter.observe("p") is None
        clock.t += 1.0
    assert p.counter_updates is None


def test_zero_delta_window_is_flagged_not_substituted(fake_nvml, clock):
    meter = gpu_meter(clock)
    with meter.window("short") as m:
        clock.t += 0.004  # the counter has not ticked
    assert math.isnan(m.energy_j)
    assert m.flags == (ZERO_DELTA,)
    assert m.source == NVML_COUNTER
    assert "update period" in m.reason


def test_cuda_sync_runs_at_both_window_edges(fake_nvml, clock):
    meter = gpu_meter(clock)
    calls = []
    meter._sync = lambda: calls.append(clock.t)
    with meter.window("w"):
        fake_nvml.advance(1.0, 100.0)
    assert calls == [0.0, 1.0]


@pytest.mark.parametrize(
    ("visible", "device", "handle"),
    [("3,1", "cuda:1", ("handle", 1)), ("GPU-abc,GPU-def", "cuda:1", ("handle", "GPU-def"))],
)
def test_cuda_visible_devices_map_to_nvml_handles(fake_nvml, clock, monkeypatch, visible, device, handle):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert make_meter(device, clock=clock, poll_interval_s=None).backend.handle == handle


def test_mig_instance_is_unavailable(fake_nvml, clock, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-5c89852c-d268-c3f3-8e4a-4f2d1e0a9a1b")
    meter = gpu_meter(clock)
    assert meter.source == UNAVAILABLE and "MIG instance" in meter.reason


# ---------------------------------------------------------------- NVML power polling


def test_trapezoid_integral():
    assert trapezoid_energy_j([(0.0, 100.0), (1.0, 200.0), (3.0, 100.0)]) == 150.0 + 300.0
    assert math.isnan(trapezoid_energy_j([(0.0, 100.0)]))


def test_power_polling_backend_integrates_scripted_trace(fake_nvml, clock):
    fake_nvml.has_counter = False
    meter = gpu_meter(clock)
    assert meter.source == NVML_POWER
    trace = [(1.0, 200.0), (2.0, 300.0), (3.0, 400.0)]  # after the 100 W sample at t=0
    fake_nvml.power_mw = 100_000
    with meter.window("w") as m:
        for t, watts in trace:
            clock.t, fake_nvml.power_mw = t, round(watts * 1000)
            meter.sample_power()
    # (100+200)/2 + (200+300)/2 + (300+400)/2, and a last 0 s segment at the closing edge
    assert m.energy_j == pytest.approx(750.0, abs=1e-9)
    assert m.power_samples == 5
    assert m.peak_power_w == 400.0
    assert m.source == NVML_POWER


def test_power_polling_thread_collects_samples(fake_nvml):
    fake_nvml.has_counter = False
    meter = make_meter("cuda:0", poll_interval_s=0.005)  # real clock, real thread
    with meter.window("w") as m:
        time.sleep(0.1)
    assert m.power_samples >= 5
    assert m.energy_j == pytest.approx(50.0 * m.duration_s, rel=0.25)  # constant 50 W
    meter.close()


# ---------------------------------------------------------------- unavailable and estimated


def test_unavailable_when_pynvml_cannot_be_imported(monkeypatch, clock):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    meter = gpu_meter(clock)
    with meter.window("w") as m:
        clock.t += 1.5
    assert meter.source == UNAVAILABLE == m.source
    assert math.isnan(m.energy_j)
    assert m.duration_s == 1.5
    assert "pynvml cannot be imported" in m.reason


def test_unavailable_when_nvml_init_fails(monkeypatch, clock):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(clock, init_error="Driver Not Loaded"))
    meter = gpu_meter(clock)
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.source == UNAVAILABLE and math.isnan(m.energy_j)
    assert "nvmlInit failed: Driver Not Loaded" in m.reason


def test_estimate_only_when_asked_and_labelled(tmp_path, clock):
    no_rapl = tmp_path / "powercap"
    plain = make_meter("cpu", clock=clock, powercap_root=no_rapl)
    tdp_only = make_meter("cpu", tdp_watts=120.0, clock=clock, powercap_root=no_rapl)
    flag_only = make_meter("cpu", allow_estimate=True, clock=clock, powercap_root=no_rapl)
    estimated = make_meter("cpu", allow_estimate=True, tdp_watts=120.0, clock=clock, powercap_root=no_rapl)
    assert [x.source for x in (plain, tdp_only, flag_only)] == [UNAVAILABLE] * 3
    assert "allow_estimate is False" in tdp_only.reason
    assert "tdp_watts is not" in flag_only.reason
    with estimated.window("w") as m:
        clock.t += 2.0
    assert (m.source, m.energy_j) == (ESTIMATED, 240.0)
    assert "120 W (TDP)" in m.reason and "no RAPL package zones" in m.reason


def test_real_counter_wins_over_estimate(fake_nvml, clock):
    assert gpu_meter(clock, allow_estimate=True, tdp_watts=700.0).source == NVML_COUNTER


# ---------------------------------------------------------------- RAPL


def write_zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 10_000_000) -> Path:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_sums_packages_and_unwraps(tmp_path, clock):
    pkg0 = write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    pkg1 = write_zone(tmp_path, "intel-rapl:1", "package-1", 9_000_000)
    write_zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside package-0: not added again
    write_zone(tmp_path, "intel-rapl:2", "psys", 7)  # the whole platform: would double count
    meter = make_meter("cpu", clock=clock, powercap_root=tmp_path)
    assert meter.source == RAPL
    with meter.window("w") as m:
        clock.t += 1.0
        (pkg0 / "energy_uj").write_text("3500000\n")  # +2.5 J
        (pkg1 / "energy_uj").write_text("500000\n")  # wrapped at 10 J: +1.5 J
        (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999999999\n")
    assert m.energy_j == 4.0
    assert m.flags == (COUNTER_WRAPPED,)  # RAPL does wrap: unwrapped, energy kept
    assert m.counter_updates == 1
    assert math.isnan(m.peak_power_w)  # RAPL has no instantaneous power reading
    assert device_info(meter)["rapl_zones"] == "package-0,package-1"


def test_rapl_unreadable_is_unavailable(tmp_path, clock):
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # reading it fails like a root-only file does
    meter = make_meter("cpu", clock=clock, powercap_root=tmp_path)
    assert meter.source == UNAVAILABLE
    assert "not readable" in meter.reason


# ---------------------------------------------------------------- profiler


def test_coefficient_of_variation():
    assert coefficient_of_variation([1.0, 2.0, 3.0]) == 0.5  # sample std 1 over mean 2
    assert math.isnan(coefficient_of_variation([4.0]))
    assert math.isnan(coefficient_of_variation([0.0, 0.0]))


def test_profile_idle_subtraction_and_cv(fake_nvml, clock):
    meter = gpu_meter(clock)
    repeat_watts = iter([200.0] * 2 + [300.0] * 2 + [400.0] * 2)  # 2 window iterations per repeat
    calls = {"n": 0}

    def run_once():
        calls["n"] += 1
        watts = 300.0 if calls["n"] <= 3 else next(repeat_watts)  # 3 warm-up iterations first
        fake_nvml.advance(0.5, watts)

    result = profile_workload(
        run_once,
        samples_per_iter=4,
        tokens_per_iter=100,
        meter=meter,
        warmup_iters=3,
        window_iters=2,
        repeats=3,
        idle_seconds=2.0,
        cooldown_seconds=1.0,
        min_window_s=1.0,
        min_counter_updates=2,  # the fake counter moves on every iteration
        sleep=lambda s: fake_nvml.advance(s, 50.0),  # idle draws 50 W
    )
    s, rows = result.summary, result.rows
    assert calls["n"] == 3 + 2 * 3
    assert s["source"] == NVML_COUNTER and s["flags"] == ""
    assert (s["idle_w"], s["idle_s"], s["idle_energy_j"]) == (50.0, 2.0, 100.0)
    # window = 2 iterations x 0.5 s = 1 s, 8 samples, 200 tokens
    assert [r["energy_j"] for r in rows] == [200.0, 300.0, 400.0]
    assert [(r["window_iters"], r["counter_updates"]) for r in rows] == [(2, 2)] * 3
    assert [r["j_per_sample_gross"] for r in rows] == [25.0, 37.5, 50.0]
    assert [r["j_per_sample_net"] for r in rows] == [18.75, 31.25, 43.75]  # (E - 50 W x 1 s) / 8
    assert [r["j_per_token_net"] for r in rows] == [0.75, 1.25, 1.75]
    assert s["j_per_sample_gross_mean"] == 37.5 and s["j_per_sample_net_mean"] == 31.25
    assert s["j_per_sample_cv"] == pytest.approx(12.5 / 37.5)
    assert s["peak_power_w_max"] == 400.0
    assert (s["energy_windows_valid"], s["energy_windows_total"]) == (3, 3)
    assert (s["batch_latency_p50_ms"], s["batch_latency_n"], s["batch_latency_tail_pct"]) == (500.0, 6, 50.0)
    assert math.isnan(s["batch_latency_p90_ms"]) and math.isnan(s["batch_latency_p99_ms"])  # 6 passes
    assert s["latency_cv"] == 0.0
    assert (s["throughput_samples_per_s"], s["throughput_tokens_per_s"], s["ms_per_sample"]) == (8.0, 200.0, 125.0)
    assert s["temperature_start_c"] == 41.0

    frame = result.to_frame()
    assert len(frame) == 3
    assert frame["gpu_name"].tolist() == ["NVIDIA H100 80GB HBM3"] * 3
    assert frame["power_limit_w"].iloc[0] == 700.0
    assert frame["device_slug"].iloc[0] == "gpu-nvidia-h100-80gb-hbm3"
    assert frame["idle_w"].tolist() == [50.0] * 3


def test_profile_flags_mig_and_shared_gpu(monkeypatch, clock, caplog):
    fake = FakeNvml(clock, mig=1, processes=2)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = profile_workload(
        lambda: fake.advance(1.0, 100.0),
        samples_per_iter=1,
        tokens_per_iter=0,
        meter=gpu_meter(clock),
        warmup_iters=0,
        window_iters=1,
        repeats=1,
        idle_seconds=0.0,
        min_counter_updates=1,
    )
    assert result.summary["flags"] == "mig_enabled;shared_gpu"
    assert "MIG is enabled" in caplog.text
    assert math.isnan(result.summary["idle_w"]) and math.isnan(result.rows[0]["j_per_sample_net"])
    assert math.isnan(result.rows[0]["j_per_token_gross"])  # no tokens
    assert math.isnan(result.summary["j_per_sample_cv"])  # one repeat


def test_profile_with_unavailable_meter_keeps_real_latencies(tmp_path):
    meter = make_meter("cpu", powercap_root=tmp_path)
    result = profile_workload(
        lambda: sum(range(2000)),
        samples_per_iter=2,
        tokens_per_iter=8,
        meter=meter,
        warmup_iters=1,
        window_iters=5,
        repeats=2,
        idle_seconds=0.01,
        min_window_s=0.0,  # real clock: keep the test fast
    )
    s = result.summary
    assert s["source"] == UNAVAILABLE and "no RAPL" in s["reason"]
    assert math.isnan(s["j_per_sample_gross_mean"]) and math.isnan(s["idle_w"])
    assert (s["energy_windows_valid"], s["energy_windows_total"]) == (0, 2)
    assert [r["counter_updates"] for r in result.rows] == [None, None]
    assert 0 < s["batch_latency_p50_ms"] <= s["batch_latency_tail_ms"] and s["batch_latency_n"] == 10
    assert s["throughput_tokens_per_s"] > 0 and s["ms_per_sample"] == 1000.0 / s["throughput_samples_per_s"]


def test_profile_parquet_round_trip(fake_nvml, clock, tmp_path):
    result = profile_workload(
        lambda: fake_nvml.advance(1.0, 100.0),
        samples_per_iter=1,
        tokens_per_iter=1,
        meter=gpu_meter(clock),
        warmup_iters=0,
        window_iters=1,
        repeats=2,
        idle_seconds=1.0,
        sleep=lambda s: fake_nvml.advance(s, 20.0),
    )
    path = tmp_path / "p.parquet"
    result.to_frame().to_parquet(path)
    import pandas as pd

    back = pd.read_parquet(path)
    # defaults: one 1 s iteration per counter update, grown to min_counter_updates=10
    assert back["window_iters"].tolist() == back["counter_updates"].tolist() == [10, 10]
    assert back["j_per_sample_net"].tolist() == [80.0, 80.0]
    assert back["source"].tolist() == [NVML_COUNTER] * 2


# ---------------------------------------------------------------- minimum window rule

REQUIRED_SUMMARY = (
    "source", "reason", "flags", "idle_w", "energy_windows_valid", "energy_windows_total",
    "j_per_sample_gross_mean", "j_per_sample_net_mean", "j_per_sample_cv", "peak_power_w_max",
    "throughput_samples_per_s", "throughput_tokens_per_s", "ms_per_sample", "batch_latency_p50_ms",
    "batch_latency_p99_ms", "batch_latency_tail_pct", "batch_latency_tail_ms", "batch_latency_n", "latency_cv",
)  # fmt: skip


def quick_profile(run_once, meter, **kwargs):
    """profile_workload with no warm-up, idle window or cooldown, one sample and one token per iteration."""
    options = dict(samples_per_iter=1, tokens_per_iter=1, warmup_iters=0, window_iters=1, repeats=2, idle_seconds=0.0)
    return profile_workload(run_once, meter=meter, **(options | kwargs))


@pytest.fixture
def slow_counter(fake_nvml):
    """A counter that moves once per second under 0.25 s iterations at 100 W."""
    fake_nvml.update_period_s = 1.0
    return lambda: fake_nvml.advance(0.25, 100.0)


def test_window_grows_in_whole_iterations_to_min_window_s(tmp_path, clock):
    meter = make_meter("cpu", allow_estimate=True, tdp_watts=120.0, clock=clock, powercap_root=tmp_path)

    def run_once():
        clock.t += 0.375

    result = quick_profile(run_once, meter, window_iters=2, min_window_s=1.0)
    # 2 iterations (0.75 s) are too short; the 3rd whole one takes the window past 1 s.
    assert [(r["window_iters"], r["window_s"]) for r in result.rows] == [(3, 1.125)] * 2
    assert [r["counter_updates"] for r in result.rows] == [None, None]  # no counter, time alone
    assert result.summary["energy_j_mean"] == 120.0 * 1.125


def test_window_grows_until_enough_counter_updates(fake_nvml, clock, slow_counter):
    meter = gpu_meter(clock)
    result = quick_profile(slow_counter, meter, min_window_s=0.5, min_counter_updates=3)
    # 0.5 s would do for time, but the counter needs 3 s (12 iterations) to move 3 times.
    assert [(r["window_iters"], r["counter_updates"], r["window_s"]) for r in result.rows] == [(12, 3, 3.0)] * 2
    assert [r["energy_j"] for r in result.rows] == [300.0, 300.0]
    s = result.summary
    assert (s["energy_windows_valid"], s["energy_windows_total"], s["j_per_sample_gross_mean"]) == (2, 2, 25.0)
    assert (s["min_window_s"], s["min_counter_updates"], s["max_window_s"]) == (0.5, 3, 60.0)


def test_window_capped_at_max_window_s_has_too_few_counter_updates(fake_nvml, clock, slow_counter):
    fake_nvml.mig, fake_nvml.processes = 1, 2
    result = quick_profile(slow_counter, gpu_meter(clock), min_window_s=0.5, min_counter_updates=10, max_window_s=2.0)
    for row in result.rows:
        assert (row["window_iters"], row["counter_updates"], row["window_s"]) == (8, 2, 2.0)
        assert math.isnan(row["energy_j"]) and row["window_flags"] == TOO_FEW_COUNTER_UPDATES
        assert "changed 2 times in 2.00 s" in row["window_reason"]
    s = result.summary
    assert (s["energy_windows_valid"], s["energy_windows_total"]) == (0, 2)
    assert math.isnan(s["energy_j_mean"]) and math.isnan(s["j_per_sample_gross_mean"])
    assert s["flags"] == "mig_enabled;shared_gpu;too_few_counter_updates"  # sorted, unique
    assert (s["throughput_samples_per_s"], s["ms_per_sample"]) == (4.0, 250.0)  # timing is still real


def test_energy_means_over_valid_windows_only(fake_nvml, clock):
    calls = {"n": 0}

    def run_once():
        calls["n"] += 1
        fake_nvml.advance(1.0, 100.0 * calls["n"])
        if calls["n"] == 2:
            fake_nvml.energy_mj = 10  # GPU reset during the second window

    result = quick_profile(run_once, gpu_meter(clock), repeats=3, min_window_s=0.0, min_counter_updates=1)
    rows, s = result.rows, result.summary
    assert rows[1]["window_flags"] == COUNTER_RESET and "reset" in rows[1]["window_reason"]
    assert rows[0]["energy_j"] == 100.0 and math.isnan(rows[1]["energy_j"]) and rows[2]["energy_j"] == 300.0
    assert (s["energy_windows_valid"], s["energy_windows_total"]) == (2, 3)
    assert s["energy_j_mean"] == s["j_per_sample_gross_mean"] == 200.0
    assert s["j_per_sample_cv"] == pytest.approx(coefficient_of_variation([100.0, 300.0]))
    assert s["flags"] == COUNTER_RESET


def test_batch_latency_percentiles_and_ms_per_sample(tmp_path, clock):
    meter = make_meter("cpu", clock=clock, powercap_root=tmp_path)
    step = iter(range(1_000))

    def run_once():
        clock.t += (next(step) % 50 + 1) / 1000.0  # 1 ... 50 ms per batch

    short = quick_profile(run_once, meter, samples_per_iter=4, window_iters=30, min_window_s=0.0).summary
    assert short["batch_latency_n"] == 60 and short["batch_latency_tail_pct"] == 95.0
    assert math.isnan(short["batch_latency_p99_ms"])  # p99 of 60 passes would be the maximum
    long = quick_profile(run_once, meter, samples_per_iter=4, window_iters=60, min_window_s=0.0).summary
    assert long["batch_latency_n"] == 120 and long["batch_latency_tail_pct"] == 99.0
    assert long["batch_latency_p50_ms"] == pytest.approx(25.0, abs=1.0)
    assert long["batch_latency_p99_ms"] == pytest.approx(50.0, abs=0.5)
    # ms_per_sample is time per sample of a batch, not a latency: total time / total samples
    assert long["ms_per_sample"] == pytest.approx(1000.0 / long["throughput_samples_per_s"])
    assert long["ms_per_sample"] == pytest.approx(long["batch_latency_mean_ms"] / 4)


def test_summary_columns_have_the_names_the_stage_reads():
    assert set(REQUIRED_SUMMARY) <= set(SUMMARY_COLUMNS)
    assert not [c for c in SUMMARY_COLUMNS if c.startswith(("latency_iter", "latency_sample", "energy_windows_ok"))]


def test_window_rule_rejects_max_below_min(fake_nvml, clock):
    with pytest.raises(ValueError, match="max_window_s"):
        quick_profile(lambda: None, gpu_meter(clock), min_window_s=5.0, max_window_s=1.0)


# ---------------------------------------------------------------- device names


def test_device_slugs(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14 96-Core Processor\n")
    assert cpu_model_name(cpuinfo) == "AMD EPYC 9B14 96-Core Processor"
    assert device_slug("cpu", cpuinfo=cpuinfo) == "cpu-amd-epyc-9b14"
    assert cpu_slug("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz") == "cpu-intel-xeon-platinum-8480-2-00ghz"


def test_gpu_slug_from_nvml(fake_nvml, clock):
    assert device_slug(meter=gpu_meter(clock)) == "gpu-nvidia-h100-80gb-hbm3"


# ---------------------------------------------------------------- GEMM helper and GPU bench


def test_joules_per_flop_on_cpu_with_unavailable_meter(tmp_path):
    from wattpeft.energy.gemm import measure_joules_per_flop

    meter = make_meter("cpu", powercap_root=tmp_path)
    for dtype in ("int8", "bf16"):
        r = measure_joules_per_flop(meter, dtype, 32, 16, 8, iters=4, warmup=1)
        assert r["flops"] == 2 * 32 * 16 * 8 * 4
        assert math.isnan(r["j_per_flop"]) and r["source"] == UNAVAILABLE
        assert r["s_per_flop"] > 0 and r["seconds"] > 0
    with pytest.raises(ValueError):
        measure_joules_per_flop(meter, "fp8", 32, 16, 8, iters=1)


def test_joules_per_flop_from_fake_counter(fake_nvml, clock, monkeypatch):
    from wattpeft.energy import gemm

    meter = gpu_meter(clock)
    real_gemm = gemm._gemm
    monkeypatch.setattr(gemm, "_gemm", lambda *a: lambda: (real_gemm(*a)(), fake_nvml.advance(0.25, 400.0)))
    r = gemm.measure_joules_per_flop(meter, "int8", 32, 16, 8, iters=4, device="cpu", warmup=0, idle_w=100.0)
    assert (r["energy_j"], r["seconds"]) == (400.0, 1.0)
    assert r["j_per_flop"] == 400.0 / (2 * 32 * 16 * 8 * 4)
    assert r["j_per_flop_net"] == 300.0 / (2 * 32 * 16 * 8 * 4)


def test_gpu_bench_refuses_without_cuda(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_energy", REPO / "bench" / "gpu_energy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    out_dir = tmp_path / "results"
    assert bench.main(["--out-dir", str(out_dir)]) != 0
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out_dir.exists()
