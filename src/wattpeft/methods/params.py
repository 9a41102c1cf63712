"""Typed, torch-free method configs: every method's `config.py` subclasses `MethodConfig`.

`MethodConfig.from_params(params, where)` turns a config.yaml mapping into a frozen
dataclass, refusing unknown keys, wrong types and out-of-range values with the field's
path (`where.key`). Nothing here imports torch or peft, so the config check and the
Snakefile can validate every method's parameters cheaply.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


# The Fisher estimators of methods/fisher.py, named here because configs must stay torch-free.
FISHER_ESTIMATORS = ("auto", "exact", "probes")


class MethodConfigError(ValueError):
    """A method's parameters are wrong: unknown key, wrong type or value out of range."""


def param(default: Any, check: Callable[[Any], bool] | None = None, rule: str = "") -> Any:
    """A config field with a range `check` (skipped for None) and the `rule` quoted on failure."""
    return dataclasses.field(default=default, metadata={"check": check, "rule": rule})


@dataclass(frozen=True)
class MethodConfig:
    """Fields every method shares; a method's `Config` subclasses this and adds its own."""

    # LoRA scaling numerator; None: 2 x rank (a scaling of 2 whatever the rank).
    alpha: float | None = param(None, lambda v: v > 0, "must be > 0")
    dropout: float = param(0.0, lambda v: 0 <= v < 1, "must be in [0, 1)")
    # Names (last components or dotted suffixes) of the linear layers to adapt; None: the
    # architecture's defaults (base.TARGET_MODULES).
    target_modules: list[str] | None = param(None, lambda v: len(v) > 0, "must name at least one module")
    # A fixed, uniform rank: bypasses the budget rule (the achieved budget is still reported).
    rank: int | None = param(None, lambda v: v >= 1, "must be >= 1")
    # Largest relative gap (percent) between achieved and nominal budget that is accepted.
    budget_tolerance_pct: float = param(10.0, lambda v: v >= 0, "must be >= 0")

    # Keys that were renamed: old name -> hint quoted when the old name is used.
    renamed: ClassVar[dict[str, str]] = {}

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "method params") -> "MethodConfig":
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise MethodConfigError(f"{where}: expected a mapping of parameters, got {type(params).__name__}")
        known = cls.field_names()
        unknown = sorted(str(k) for k in params if k not in known)
        if unknown:
            raise MethodConfigError(_unknown_message(cls, where, unknown, known))
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in params:
                values[f.name] = _checked(f, hints[f.name], params[f.name], f"{where}.{f.name}")
        config = cls(**values)
        for key, rule in config.problems():
            raise MethodConfigError(f"{where}.{key}: {rule}")
        return config

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field problems as (key, rule); a subclass overrides this when fields interact."""
        return []


def _unknown_message(cls: type[MethodConfig], where: str, unknown: list[str], known: set[str]) -> str:
    paths = ", ".join(f"{where}.{k}" for k in unknown)
    hints = "".join(f"; {k} was replaced by {cls.renamed[k]}" for k in unknown if k in cls.renamed)
    noun = "unknown key" if len(unknown) == 1 else "unknown keys"
    return f"{paths}: {noun}; known: {', '.join(sorted(known))}{hints}"


def _checked(field: dataclasses.Field, hint: Any, value: Any, path: str) -> Any:
    """`value` converted to the field's type (int -> float, sequence -> list) or an error."""
    if not _matches(value, hint):
        raise MethodConfigError(
            f"{path}: expected {_type_name(hint)}, got {value!r} ({type(value).__name__})"
        )
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and _accepts(hint, float) and not _accepts(hint, int):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise MethodConfigError(f"{path}: must be finite, got {value!r}")
    if isinstance(value, list):
        value = list(value)
    check = field.metadata.get("check")
    if check is not None and not check(value):
        raise MethodConfigError(f"{path}: {field.metadata['rule']}, got {value!r} ({type(value).__name__})")
    return value


def _union_args(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _accepts(hint: Any, kind: type) -> bool:
    return kind in _union_args(hint)


def _matches(value: Any, hint: Any) -> bool:
    for option in _union_args(hint):
        if option is type(None):
            if value is None:
                return True
        elif typing.get_origin(option) is list:
            (item,) = typing.get_args(option)
            if isinstance(value, list) and all(_matches(v, item) for v in value):
                return True
        elif isinstance(value, bool):  # YAML `yes`/`true` is a bool, never a number
            if option is bool:
                return True
        elif option is float:
            if isinstance(value, (int, float)):
                return True
        elif isinstance(value, option):
            return True
    return False


def _type_name(hint: Any) -> str:
    names = []
    for option in _union_args(hint):
        if option is type(None):
            names.append("None")
        elif typing.get_origin(option) is list:
            names.append(f"a list of {_type_name(typing.get_args(option)[0])}")
        else:
            names.append(option.__name__)
    return " or ".join(names)


__all__ = ["FISHER_ESTIMATORS", "MethodConfig", "MethodConfigError", "param"]
