"""Energy measurement: meters with source labels, the profiling method, device facts.

    from wattpeft.energy import make_meter, profile_workload, device_slug
    from wattpeft.energy.gemm import measure_joules_per_flop   # imports torch

See docs/energy.md for the method and what each source label means.
"""

from wattpeft.energy.backends import (
    ESTIMATED,
    NVML_COUNTER,
    NVML_POWER,
    RAPL,
    SOURCES,
    UNAVAILABLE,
    trapezoid_energy_j,
)
from wattpeft.energy.device import device_info, device_slug
from wattpeft.energy.meter import EnergyMeter, Measurement, make_meter, resolve_device
from wattpeft.energy.profiler import (
    ROW_COLUMNS,
    SUMMARY_COLUMNS,
    ProfileResult,
    coefficient_of_variation,
    profile_workload,
)

__all__ = [
    "ESTIMATED",
    "NVML_COUNTER",
    "NVML_POWER",
    "RAPL",
    "SOURCES",
    "UNAVAILABLE",
    "EnergyMeter",
    "Measurement",
    "ProfileResult",
    "ROW_COLUMNS",
    "SUMMARY_COLUMNS",
    "coefficient_of_variation",
    "device_info",
    "device_slug",
    "make_meter",
    "profile_workload",
    "resolve_device",
    "trapezoid_energy_j",
]
