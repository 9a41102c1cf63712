"""Family artefacts a method's training job may need, by name: where the workflow keeps
each one and how a stage reads it. A registry entry names them (`Entry.needs`); the rules
(common.smk, `needs_of`) wire the paths as inputs for every method alike, and the method
receives what was read as `inputs[name]`. A new kind of artefact is one line here and the
rule that writes it. Torch-free: the Snakefile reads the paths at parse time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# {device}: profiling.device as configured; {family}: the run's family.
NEED_PATHS = {
    # The profiled device's joules per FLOP of int8 and 16-bit GEMMs (rule energy_table).
    "energy_table": "results/profiles/{device}/energy_table.json",
    # Every device's profile rows for the family's backbone (rule device_table).
    "device_table": "results/devices/{family}/table.parquet",
    # The family's meta-surrogate, calibrated on its unseen device (rule surrogate).
    "surrogate": "results/surrogate/{family}/store",
}


def need_path(name: str, family: str, device: str) -> str:
    if name not in NEED_PATHS:
        raise KeyError(f"unknown method need {name!r}; known: {sorted(NEED_PATHS)} (wattpeft/needs.py)")
    return NEED_PATHS[name].format(family=family, device=device)


def read_need(name: str, path: str | Path) -> Any:
    """The artefact `name` at `path`, read and checked."""
    if name == "energy_table":
        from .energy.table import check_table
        from .utils.io import read_json

        return check_table(read_json(path), str(path))
    if name == "device_table":
        from .devices.table import read_table

        return read_table(path)
    if name == "surrogate":
        from .surrogate.store import load_surrogate

        return load_surrogate(path)
    raise KeyError(f"unknown method need {name!r} ({path})")
