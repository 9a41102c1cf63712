"""Method registry: a new method is one folder under methods/ plus one line here.

Each registered package holds `__init__.py` (a docstring), `config.py` (a torch-free
dataclass `Config`, a `params.MethodConfig`) and `model.py` (the `Method` class, an
`base.AdapterMethod`). Names map to package paths so that reading the registry or a
method's config (config validation, Snakefile parsing) never imports torch.
See docs/methods.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AdapterMethod
    from .params import MethodConfig

METHODS: dict[str, str] = {
    "lora": "wattpeft.methods.lora",
    "adalora": "wattpeft.methods.adalora",
    "fw_lora": "wattpeft.methods.fw_lora",
}


def method_names() -> list[str]:
    return sorted(METHODS)


def _package(name: str) -> str:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}")
    return METHODS[name]


def get_method(name: str) -> type["AdapterMethod"]:
    """The method class registered under `name` (imports torch and peft)."""
    return importlib.import_module(f"{_package(name)}.model").Method


def method_config(name: str) -> type["MethodConfig"]:
    """The config class of the method registered under `name` (torch-free)."""
    return importlib.import_module(f"{_package(name)}.config").Config


__all__ = ["METHODS", "get_method", "method_config", "method_names"]
