"""Energy measurement: meters with source labels, the profiling method, device facts.

    from wattpeft.energy import make_meter, profile_workload, device_slug
    from wattpeft.energy.gemm import measure_joules_per_flop   # imports torch

See docs/energy.md for the method and what each source label means.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

# Imported lazily (PEP 562): a job that reads only the energy table (energy/table.py) must
# neither import the meters nor take their code into its code version (codehash.py). Code
# under src/ imports from the submodules, so that codehash sees what each job runs.
_EXPORTS = {
    "backends": ("ESTIMATED", "NVML_COUNTER", "NVML_POWER", "RAPL", "SOURCES", "UNAVAILABLE", "trapezoid_energy_j"),
    "device": ("device_info", "device_slug"),
    "meter": ("EnergyMeter", "Measurement", "make_meter", "resolve_device"),
    "profiler": ("ROW_COLUMNS", "SUMMARY_COLUMNS", "ProfileResult", "coefficient_of_variation", "profile_workload"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
