"""The device profile table: one row is one configuration s on one device, with its source.

Columns (`COLUMNS`, all required):

- `device`: slug of the device (letters, digits, `.`, `_`, `-`; it names folders).
- `source`: `measured` (this pipeline's profiling stage on a real device), `imported` (a
  CSV someone measured elsewhere) or `simulated` (the analytic roofline model in
  `roofline.py`: modelled, not measured).
- `model`: the backbone the row was measured or simulated for.
- s: `seq_len` (>= 1), `kept_layers` (>= 1), `kept_heads` (>= 1, heads kept per layer),
  `kept_ranks` (>= 0, LoRA rank kept per adapted module; 0 = no adapter path) and
  `param_bits` (4, 8, 16 or 32): integers.
- `energy_j`, `latency_ms`, `peak_power_w`: positive finite floats, per forward pass of one
  sequence. NaN means unavailable, and then the optional column `unavailable` must say why.
- `provenance`: free text, never empty: for measured and imported rows the device's name,
  driver, date and command; for simulated rows the model, its figures and the noise.

Extra columns are kept as they are. `validate_table` reports every problem at once in one
`DeviceTableError`, each naming the file (or table), the row and the column. Rows are
numbered from 1 among the data rows, below the header: row N is line N + 1 of a CSV file
(line 1 is the header; a quoted cell spanning lines shifts the later lines); messages give
both, e.g. "row 2 (line 3), column latency_ms: 'fast' is not a number".
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from ..utils.io import atomic_path
from .catalogue import PARAM_BITS

MEASURED, IMPORTED, SIMULATED = SOURCES = ("measured", "imported", "simulated")
TEXT_COLUMNS = ("device", "source", "model", "provenance")
CONFIG_COLUMNS = ("seq_len", "kept_layers", "kept_heads", "kept_ranks", "param_bits")
METRIC_COLUMNS = ("energy_j", "latency_ms", "peak_power_w")
COLUMNS = ("device", "source", "model", *CONFIG_COLUMNS, *METRIC_COLUMNS, "provenance")
UNAVAILABLE = "unavailable"
# Smallest value of each part of s (kept_ranks 0: the configuration has no LoRA path).
CONFIG_MINIMUM = {"seq_len": 1, "kept_layers": 1, "kept_heads": 1, "kept_ranks": 0, "param_bits": 4}
DEVICE_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DeviceTableError(ValueError):
    """A device table that breaks the schema; `problems` lists each one (row and column)."""

    def __init__(self, where: str, problems: list[str]):
        self.where = str(where)
        self.problems = list(problems)
        lines = "\n  ".join(self.problems)
        super().__init__(f"{self.where}: {len(self.problems)} problem(s) in the device table:\n  {lines}")


def cell_name(position: int, column: str) -> str:
    """'row 3 (line 4), column latency_ms' for the 0-based data row `position`."""
    return f"row {position + 1} (line {position + 2}), column {column}"


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or blank text."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def validate_table(frame: pd.DataFrame, where: str | Path,
                   totals: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
    """The table with normalised types (int64 s, float64 metrics, str text), or a
    `DeviceTableError` listing every problem.

    `totals` maps a model name to its totals per s column, e.g.
    {"SmolLM2-135M": {"kept_layers": 30, "kept_heads": 9}} (ModelShape.totals()); rows of a
    model named there may not keep more than that.
    """
    table, problems = table_problems(frame, totals)
    if problems:
        raise DeviceTableError(str(where), problems)
    return table


def table_problems(frame: pd.DataFrame, totals: Mapping[str, Mapping[str, int]] | None = None
                   ) -> tuple[pd.DataFrame, list[str]]:
    """(normalised table, problems): the checks of `validate_table` without raising."""
    table = frame.reset_index(drop=True).copy()
    problems = [f"column {column}: missing" for column in COLUMNS if column not in table.columns]
    if table.empty:
        problems.append("the table has no rows")
    reasons = table[UNAVAILABLE] if UNAVAILABLE in table.columns else pd.Series([None] * len(table))
    for column in TEXT_COLUMNS:
        if column in table.columns:
            problems += text_problems(table[column], column)
    for column in CONFIG_COLUMNS:
        if column in table.columns:
            table[column], found = integer_column(table[column], column)
            problems += found
    for column in METRIC_COLUMNS:
        if column in table.columns:
            table[column], found = metric_column(table[column], column, reasons)
            problems += found
    problems += total_problems(table, totals or {})
    return table, problems


def text_problems(values: pd.Series, column: str) -> list[str]:
    problems = []
    for position, value in enumerate(values):
        problem = text_problem(value, column)
        if problem:
            problems.append(f"{cell_name(position, column)}: {problem}")
    return problems


def text_problem(value: Any, column: str) -> str | None:
    if is_missing(value):
        return "empty"
    if not isinstance(value, str):
        return f"{value!r} is a {type(value).__name__}, not text"
    if column == "source" and value not in SOURCES:
        return f"{value!r} is not a source: one of {', '.join(SOURCES)}"
    if column == "device" and not DEVICE_SLUG.match(value):
        return f"{value!r} is not a slug (letters, digits, '.', '_', '-'; no spaces or slashes)"
    return None


def numeric_column(values: pd.Series, column: str, problem_of: Callable[[int, Any, float], str | None],
                   dtype: str) -> tuple[pd.Series, list[str]]:
    """(the column as `dtype`, problems); `problem_of(position, raw, number)` judges each cell."""
    numbers = pd.to_numeric(values, errors="coerce")
    problems = []
    for position, (raw, number) in enumerate(zip(values, numbers)):
        problem = problem_of(position, raw, number)
        if problem:
            problems.append(f"{cell_name(position, column)}: {problem}")
    if problems:
        return values, problems
    return numbers.astype(dtype), problems


def integer_column(values: pd.Series, column: str) -> tuple[pd.Series, list[str]]:
    """An integer >= the column's minimum; bits one of PARAM_BITS."""
    return numeric_column(values, column, lambda _, raw, number: integer_problem(raw, number, column), "int64")


def integer_problem(raw: Any, number: float, column: str) -> str | None:
    if is_missing(raw):
        return "empty"
    if isinstance(raw, bool) or math.isnan(number):
        return f"{raw!r} is not a number"
    if not math.isfinite(number) or number != int(number):
        return f"{raw!r} is not an integer"
    if column == "param_bits" and int(number) not in PARAM_BITS:
        return f"{int(number)} bits is not one of {', '.join(map(str, PARAM_BITS))}"
    if number < CONFIG_MINIMUM[column]:
        return f"{int(number)} is below the minimum {CONFIG_MINIMUM[column]}"
    return None


def metric_column(values: pd.Series, column: str, reasons: pd.Series) -> tuple[pd.Series, list[str]]:
    """Positive and finite, or NaN with a reason in `unavailable`."""
    reason_at = list(reasons)
    return numeric_column(values, column, lambda k, raw, number: metric_problem(raw, number, reason_at[k]), "float64")


def metric_problem(raw: Any, number: float, reason: Any) -> str | None:
    if is_missing(raw) or (not isinstance(raw, str) and math.isnan(number)):
        return None if not is_missing(reason) else f"empty: give the reason in column {UNAVAILABLE!r}"
    if isinstance(raw, bool) or math.isnan(number):
        return f"{raw!r} is not a number"
    if not math.isfinite(number) or number <= 0:
        return f"{raw!r} is not a positive finite number"
    return None


def total_problems(table: pd.DataFrame, totals: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Rows that keep more layers, heads or ranks than their model has."""
    if "model" not in table.columns:
        return []
    problems = []
    for model, limits in totals.items():
        for column, total in limits.items():
            if column not in table.columns or table[column].dtype != "int64":
                continue
            over = (table["model"] == model) & (table[column] > total)
            for position in over[over].index:
                value = table[column].iloc[position]
                problems.append(f"{cell_name(position, column)}: {value} is above {model}'s total of {total}")
    return problems


def read_imported_csv(path: str | Path, device: str | None = None,
                      totals: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
    """A CSV measured elsewhere (a Jetson, a phone) as a validated table with source `imported`.

    Its `source` column may be left out or empty; a row that claims any other source
    (`simulated` or `measured`) is rejected, never relabelled: those rows come from this
    pipeline only. `device`, when given, fills an absent or empty `device` column, and a row
    naming another device is rejected.
    """
    where = str(path)
    frame = read_csv_text(path)
    problems = label_imported(frame) + label_device(frame, device)
    table, found = table_problems(frame, totals)
    if problems + found:
        raise DeviceTableError(where, problems + found)
    return table


def read_csv_text(path: str | Path) -> pd.DataFrame:
    """Every cell as text (empty cells as NaN), so each one is checked and reported as written."""
    try:
        return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DeviceTableError(str(path), [f"not a readable CSV: {exc}"]) from exc


def label_imported(frame: pd.DataFrame) -> list[str]:
    why = (f" in an imported CSV: its rows are {IMPORTED!r} ({MEASURED!r} and {SIMULATED!r} rows come "
           "from this pipeline only)")
    return fill_or_refuse(frame, "source", IMPORTED, why)


def label_device(frame: pd.DataFrame, device: str | None) -> list[str]:
    return [] if device is None else fill_or_refuse(frame, "device", device, f", but the CSV is imported as {device!r}")


def fill_or_refuse(frame: pd.DataFrame, column: str, value: str, why: str) -> list[str]:
    """Fill an absent column or empty cells with `value`; a cell saying otherwise is a problem."""
    if column not in frame.columns:
        frame[column] = value
        return []
    problems = []
    for position, cell in enumerate(frame[column]):
        if is_missing(cell):
            frame.loc[frame.index[position], column] = value
        elif cell != value:
            problems.append(f"{cell_name(position, column)}: {cell!r}{why}")
    return problems


def write_table(frame: pd.DataFrame, path: str | Path,
                totals: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
    """Validate, then write parquet atomically (nothing half-written on failure); returns the table."""
    table = validate_table(frame, path, totals)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return table


def read_table(path: str | Path, totals: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
    return validate_table(pd.read_parquet(path), path, totals)


__all__ = ["COLUMNS", "CONFIG_COLUMNS", "DeviceTableError", "IMPORTED", "MEASURED", "METRIC_COLUMNS",
           "PARAM_BITS", "SIMULATED", "SOURCES", "UNAVAILABLE", "read_imported_csv", "read_table",
           "validate_table", "write_table"]
