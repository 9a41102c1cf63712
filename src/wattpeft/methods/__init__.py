"""Method registry: a new method is one folder under methods/ plus one line here.

Names map to module paths so that reading the registry (config validation, Snakefile
parsing) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AdapterMethod

METHODS: dict[str, str] = {
    "lora": "wattpeft.methods.lora",
    "adalora": "wattpeft.methods.adalora",
}


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type["AdapterMethod"]:
    """The method class registered under `name` (each method module exports `Method`)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}")
    return importlib.import_module(METHODS[name]).Method


__all__ = ["METHODS", "get_method", "method_names"]
