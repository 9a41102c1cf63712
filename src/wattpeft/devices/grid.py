"""The configurations s = (seq_len, kept_layers, kept_heads, kept_ranks, param_bits) to
profile or simulate: every combination of the values listed per field.

    {"seq_len": [64, 256, 1024], "kept_layers": [0.25, 0.5, "all"], "kept_heads": [3, "all"],
     "kept_ranks": [0, 4, 8], "param_bits": [4, 8, 16]}

Convention for kept_layers and kept_heads: a whole number (3, or 3.0) is a count; a number
strictly between 0 and 1 is a fraction of the model's total, rounded up (0.5 of 9 heads
is 5; never 0); "all" is the total. So 1 is one layer, never all of them. seq_len and
kept_ranks are counts (kept_ranks 0: no LoRA path); param_bits is one of 4, 8, 16, 32.
Values that resolve to the same count are kept once; the order is that of the lists, the
last field varying fastest. Every error names the field (and the value).
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any, Mapping

from .roofline import ModelShape
from .table import CONFIG_COLUMNS, CONFIG_MINIMUM, PARAM_BITS

FRACTION_FIELDS = {"kept_layers": "layers", "kept_heads": "heads"}
ALL = "all"


class GridError(ValueError):
    """A grid configuration that cannot be read; the message names the field."""


def configuration_grid(shape: ModelShape, spec_cfg: Mapping[str, Any], where: str = "grid") -> list[dict[str, int]]:
    """Every combination of the listed values, as table rows' s columns."""
    unknown = sorted(set(spec_cfg) - set(CONFIG_COLUMNS))
    if unknown:
        raise GridError(f"{where}: unknown field(s) {unknown}; the fields are {list(CONFIG_COLUMNS)}")
    values = [field_values(shape, spec_cfg, field, f"{where}.{field}") for field in CONFIG_COLUMNS]
    return [dict(zip(CONFIG_COLUMNS, combination)) for combination in itertools.product(*values)]


def field_values(shape: ModelShape, spec_cfg: Mapping[str, Any], field: str, where: str) -> list[int]:
    """One field's values as counts, duplicates dropped, in the order given."""
    if field not in spec_cfg:
        raise GridError(f"{where}: missing; give a list of values")
    raw = spec_cfg[field]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, (list, tuple)) or not raw:
        raise GridError(f"{where}: must be a non-empty list of values, got {raw!r}")
    return list(dict.fromkeys(resolve(shape, field, value, where) for value in raw))


def resolve(shape: ModelShape, field: str, value: Any, where: str) -> int:
    total = getattr(shape, FRACTION_FIELDS[field]) if field in FRACTION_FIELDS else None
    if value == ALL and total is not None:
        return total
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        allowed = "a number or 'all'" if total is not None else "a whole number"
        raise GridError(f"{where}: {value!r} is not {allowed}")
    if total is not None and 0 < value < 1:
        return max(1, math.ceil(round(value * total, 9)))
    return checked_count(field, value, total, where)


def checked_count(field: str, value: float, total: int | None, where: str) -> int:
    if value != int(value):
        hint = " (fractions lie strictly between 0 and 1)" if total is not None else ""
        raise GridError(f"{where}: {value!r} is not a whole number{hint}")
    count = int(value)
    if field == "param_bits" and count not in PARAM_BITS:
        raise GridError(f"{where}: {count} bits is not one of {list(PARAM_BITS)}")
    if count < CONFIG_MINIMUM[field]:
        raise GridError(f"{where}: {count} is below the minimum {CONFIG_MINIMUM[field]}")
    if total is not None and count > total:
        raise GridError(f"{where}: {count} is above the model's {total} {FRACTION_FIELDS[field]}")
    return count


__all__ = ["ALL", "GridError", "configuration_grid"]
