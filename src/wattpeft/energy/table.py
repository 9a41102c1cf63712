"""Joules per FLOP of int8 and 16-bit GEMMs on one device: the constants behind the
spectral methods' energy model, E_dir(i, state) = FLOPs of direction i x J/FLOP(state).

The profiling stage measures the table (rule energy_table, `gemm.measure_energy_table`) when the
device has an energy counter. Without one, the documented defaults below are used, and the
table says `source: default` with their reference; every output that uses the table
carries that label. Torch-free: training jobs read the table without the meters.
"""

from __future__ import annotations

import math
from typing import Any

# Gate states of a spectral direction and their precision ("fp16" is the device's 16-bit
# type: bf16 on a CPU, fp16 or bf16 on a GPU).
STATE_PRECISION = {"off": None, "int8": "int8", "fp16": "16bit"}

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, Fig. 1.1.9
# (45 nm): an 8-bit integer multiply 0.2 pJ plus add 0.03 pJ; a 16-bit float multiply 1.1 pJ
# plus add 0.4 pJ. One multiply-add is 2 FLOPs. Arithmetic only: no data movement, so these
# understate a real GEMM's energy and, roughly, overstate int8's relative saving.
DEFAULT_J_PER_FLOP = {"int8": (0.2e-12 + 0.03e-12) / 2, "16bit": (1.1e-12 + 0.4e-12) / 2}
DEFAULT_REFERENCE = (
    "defaults: Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm arithmetic only: "
    "int8 multiply-add 0.23 pJ, fp16 multiply-add 1.5 pJ; per FLOP = half a multiply-add)"
)

# The GEMM shape the profiling stage times: a prefill-sized activation block times a square
# weight (multiples of 8 and M > 16, as CUDA's int8 GEMM requires).
MEASURE_SHAPE = {"m": 512, "k": 1024, "n": 1024}


def default_table(reason: str = "no energy counter on this device") -> dict[str, Any]:
    return {
        "j_per_flop": dict(DEFAULT_J_PER_FLOP),
        "source": "default",
        "reference": DEFAULT_REFERENCE,
        "reason": reason,
    }


def state_j_per_flop(table: dict[str, Any], states: tuple[str, ...]) -> list[float]:
    """J/FLOP of each gate state in `states` (0 for off)."""
    out = []
    for state in states:
        precision = STATE_PRECISION[state]
        out.append(0.0 if precision is None else float(table["j_per_flop"][precision]))
    return out


def check_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """The table, or a ValueError naming the bad field of `where` (a file or a config key)."""
    jpf = table.get("j_per_flop")
    if not isinstance(jpf, dict):
        raise ValueError(f"{where}: j_per_flop must be a mapping of int8 and 16bit to joules per FLOP")
    for key in ("int8", "16bit"):
        value = jpf.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: j_per_flop.{key} must be a positive number, got {value!r}")
    if table.get("source") not in ("measured", "default", "configured"):
        raise ValueError(f"{where}: source must be measured, default or configured, got {table.get('source')!r}")
    return table


__all__ = ["DEFAULT_J_PER_FLOP", "MEASURE_SHAPE", "STATE_PRECISION", "check_table", "default_table",
           "state_j_per_flop"]
