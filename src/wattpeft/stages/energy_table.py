"""Energy-table stage: the device's joules per FLOP of int8 and 16-bit GEMMs (energy/table.py),
measured where the device has an energy counter, else the documented defaults, labelled so.

Its own module, apart from the profile stage: training jobs read the table, and their code
version must not follow the profiler's code (codehash.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import pin_threads


def run_energy_table(device_label: str, out_path: Path, threads: int = 1) -> dict[str, Any]:
    """The device's joules per FLOP of int8 and 16-bit GEMMs (energy/table.py): measured when
    the device has an energy counter, else the documented defaults, labelled as such (the
    times per FLOP measured here are kept beside them)."""
    from ..energy.meter import make_meter
    from ..energy.device import device_slug
    from ..energy.gemm import measure_energy_table
    from ..utils.io import write_json

    pin_threads(threads)
    meter = make_meter("auto")
    try:
        table = measure_energy_table(meter)
        table.update(profile_label=device_label, device_slug=device_slug(meter=meter), threads=threads)
    finally:
        meter.close()
    write_json(out_path, table)
    return table
