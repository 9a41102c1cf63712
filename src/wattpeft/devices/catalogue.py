"""The simulated devices' published figures (peak operations per second per precision,
memory bandwidth, idle and peak power), each with where it comes from; derived and assumed
figures say so. Plain Python: config validation reads the names before any job starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

# Widths of weights a configuration s may name (param_bits).
PARAM_BITS = (4, 8, 16, 32)
TERA, GIGA, MICRO = 1e12, 1e9, 1e-6


@dataclass(frozen=True)
class DeviceSpec:
    """A device's published figures. `peak_flops[bits]`: operations per second with
    `bits`-bit operands (FLOP/s or integer OP/s); where the device has no faster path for
    fewer bits (weights widened first), the figure is that of the wider type."""

    name: str
    peak_flops: Mapping[int, float]
    memory_bandwidth: float  # bytes per second
    idle_w: float
    peak_w: float
    references: tuple[str, ...]
    layer_overhead_s: float = 0.0  # assumed per-layer launch or dispatch cost

    def __post_init__(self) -> None:
        if sorted(self.peak_flops) != sorted(PARAM_BITS):
            raise ValueError(f"{self.name}: peak_flops needs exactly the bits {PARAM_BITS}")
        rates = [self.peak_flops[bits] for bits in sorted(PARAM_BITS)]
        if min(rates) <= 0 or rates != sorted(rates, reverse=True):
            raise ValueError(f"{self.name}: peak_flops must be positive and never grow with the bits")
        if not 0 <= self.idle_w < self.peak_w or self.memory_bandwidth <= 0 or self.layer_overhead_s < 0:
            raise ValueError(f"{self.name}: needs 0 <= idle_w < peak_w, bandwidth > 0, overhead >= 0")
        if not self.references:
            raise ValueError(f"{self.name}: say where the figures come from (references)")


SIMULATED_DEVICES: dict[str, DeviceSpec] = {
    spec.name: spec
    for spec in (
        DeviceSpec(
            name="RTX-A6000",
            peak_flops={
                32: 38.7 * TERA,  # NVIDIA RTX A6000 datasheet: single-precision 38.7 TFLOPS
                16: 154.8 * TERA,  # GA102 whitepaper, RTX A6000: FP16 tensor, dense (309.7 sparse)
                8: 309.7 * TERA,  # GA102 whitepaper, RTX A6000: INT8 tensor TOPS, dense
                4: 619.4 * TERA,  # GA102 whitepaper, RTX A6000: INT4 tensor TOPS, dense
            },
            memory_bandwidth=768 * GIGA,  # datasheet: 48 GB GDDR6, 768 GB/s
            idle_w=25.0,  # assumption: no vendor figure; typical idle reading of a GA102 card
            peak_w=300.0,  # datasheet: max power consumption 300 W
            layer_overhead_s=40 * MICRO,  # assumption: ~8 kernel launches of ~5 us per layer
            references=(
                "NVIDIA RTX A6000 datasheet (2020): 38.7 TFLOPS FP32, 768 GB/s, 300 W",
                "NVIDIA Ampere GA102 GPU Architecture whitepaper, appendix (RTX A6000): dense tensor "
                "FP16 154.8 TFLOPS, INT8 309.7 TOPS, INT4 619.4 TOPS",
            ),
        ),
        DeviceSpec(
            name="Jetson-Orin-NX",  # the 16 GB module, GPU only (the DLAs are not modelled)
            peak_flops={
                32: 1024 * 2 * 918e6,  # derived: 1024 CUDA cores x FMA x 918 MHz (datasheet) = 1.88 TFLOPS
                16: 32 * 256 * 2 * 918e6,  # derived: 32 tensor cores x 256 FP16 FMA/clk x 918 MHz = 15.0 TFLOPS
                8: 32 * 512 * 2 * 918e6,  # derived: 2 x FP16 (Ampere dense INT8) = 30.1 TOPS
                4: 32 * 1024 * 2 * 918e6,  # derived: 2 x INT8 (Ampere dense INT4) = 60.2 TOPS
            },
            memory_bandwidth=102.4 * GIGA,  # datasheet: 128-bit LPDDR5, 102.4 GB/s
            idle_w=5.0,  # assumption: no vendor figure for an idle module
            peak_w=25.0,  # datasheet: power configurable 10 W to 25 W
            layer_overhead_s=80 * MICRO,  # assumption: slower launches than a desktop GPU
            references=(
                "NVIDIA Jetson Orin NX Series data sheet DS-10712-001 and product brief: 16 GB module, "
                "1024-core Ampere GPU with 32 tensor cores at 918 MHz, 102.4 GB/s, 10-25 W, 100 sparse "
                "INT8 TOPS (GPU 60 + DLA 40; the derived dense GPU INT8 30.1 TOPS is half of 60)",
            ),
        ),
        DeviceSpec(
            name="MacBook-M2",  # the 10-core GPU (Metal), where PyTorch and llama.cpp run
            peak_flops={
                32: 3.6 * TERA,  # Apple M2 (WWDC 2022): 10-core GPU, 3.6 TFLOPS
                16: 3.6 * TERA,  # derived: this GPU generation runs FP16 at the FP32 rate
                8: 3.6 * TERA,  # derived: no faster integer matmul; int8 weights widened to FP16
                4: 3.6 * TERA,  # derived: as int8
            },
            memory_bandwidth=100 * GIGA,  # Apple M2 announcement: 100 GB/s unified memory
            idle_w=2.0,  # assumption: no vendor figure
            peak_w=20.0,  # assumption: no vendor figure; third-party package-power readings ~20 W
            layer_overhead_s=60 * MICRO,  # assumption
            references=(
                "Apple newsroom, 'Apple unveils M2' (June 2022) and WWDC 2022 keynote: 10-core GPU "
                "3.6 TFLOPS, 100 GB/s unified memory bandwidth, Neural Engine 15.8 TOPS (not modelled)",
            ),
        ),
        DeviceSpec(
            name="iPhone-15-NPU",  # A17 Pro (iPhone 15 Pro) Neural Engine
            peak_flops={
                # derived: no FP32 on the Neural Engine; the 6-core GPU, 128 ALUs per core, FMA,
                # at an assumed 1.4 GHz (Apple publishes no clock): 2.15 TFLOPS
                32: 6 * 128 * 2 * 1.4e9,
                16: 17.5 * TERA,  # derived: half the INT8 rate
                8: 35 * TERA,  # Apple, iPhone 15 Pro announcement (Sept 2023): Neural Engine 35 TOPS, read as INT8
                4: 35 * TERA,  # derived: 4-bit weights are expanded; no faster int4 path
            },
            # derived: LPDDR5-6400 x 64-bit bus, per third-party teardowns (Apple publishes none)
            memory_bandwidth=51.2 * GIGA,
            idle_w=0.5,  # assumption: no vendor figure
            peak_w=8.0,  # assumption: no vendor figure; a phone SoC's sustained envelope
            layer_overhead_s=20 * MICRO,  # assumption: a compiled graph, little dispatch cost
            references=(
                "Apple newsroom, iPhone 15 Pro (September 2023): A17 Pro, 16-core Neural Engine up to "
                "35 trillion operations per second, 6-core GPU",
                "Memory: LPDDR5-6400 on a 64-bit bus per third-party teardowns (derived 51.2 GB/s)",
            ),
        ),
        DeviceSpec(
            name="Pixel-8-TPU",  # Google Tensor G3 TPU
            peak_flops={
                32: 1.0 * TERA,  # assumption: no FP32 on the TPU; the Mali-G715 GPU's rate, order of magnitude
                16: 10 * TERA,  # derived: half the INT8 rate
                8: 20 * TERA,  # assumption: Google publishes no TOPS figure for the Tensor G3 TPU
                4: 20 * TERA,  # derived: as int8 (no faster int4 path assumed)
            },
            memory_bandwidth=68.3 * GIGA,  # derived: LPDDR5X-8533 x 64-bit bus, an upper bound
            idle_w=0.5,  # assumption: no vendor figure
            peak_w=8.0,  # assumption: no vendor figure; a phone SoC's sustained envelope
            layer_overhead_s=20 * MICRO,  # assumption
            references=(
                "Google Pixel 8 tech specs: Google Tensor G3, 8 GB LPDDR5X (bus width and speed grade "
                "unpublished: 64-bit x 8533 MT/s assumed, 68.3 GB/s)",
                "No published TOPS or power figure for the Tensor G3 TPU: 20 INT8 TOPS and 8 W are "
                "assumptions, between the Coral Edge TPU (4 TOPS) and the A17 Pro Neural Engine (35 TOPS)",
            ),
        ),
        DeviceSpec(
            name="Raspberry-Pi-4",  # Model B, BCM2711: 4 x Cortex-A72 at 1.5 GHz, CPU only
            peak_flops={
                32: 4 * 1.5e9 * 8,  # derived: 4 cores x 1.5 GHz x one 128-bit NEON FMA/cycle (8 FLOP) = 48 GFLOPS
                16: 4 * 1.5e9 * 8,  # derived: ARMv8.0-A has no FP16 arithmetic; widened to FP32
                8: 4 * 1.5e9 * 16,  # derived: NEON widening int8 multiply-accumulate, 2 x FP32 = 96 GOPS
                4: 4 * 1.5e9 * 16,  # derived: no int4 arithmetic; unpacked to int8
            },
            memory_bandwidth=12.8 * GIGA,  # derived: LPDDR4-3200 (product brief) x 32-bit bus
            idle_w=2.7,  # third-party measurement (pidramble.com): 540 mA at 5 V, idle
            peak_w=6.4,  # third-party measurement (pidramble.com): 1280 mA at 5 V, stress --cpu 4
            layer_overhead_s=2 * MICRO,  # assumption: function calls on a CPU
            references=(
                "Raspberry Pi 4 Model B product brief: BCM2711, quad Cortex-A72 (ARMv8) at 1.5 GHz, "
                "LPDDR4-3200",
                "Power: pidramble.com power-consumption benchmarks (Pi 4 B idle 2.7 W, 400% CPU 6.4 W)",
            ),
        ),
    )
}
