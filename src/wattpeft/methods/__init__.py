"""Method registry: a new method is one folder under methods/ plus one line here.

Each registered package holds `__init__.py` (a docstring), `config.py` (a torch-free
dataclass `Config`, a `params.MethodConfig`) and `model.py` (the `Method` class, an
`base.AdapterMethod`). Names map to package paths so that reading the registry or a
method's config (config validation, Snakefile parsing) never imports torch.
See docs/methods.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import AdapterMethod
    from .params import MethodConfig



@dataclass(frozen=True)
class Entry:
    """A registered method: its package, and what its training job needs from other jobs
    (the rules wire these as inputs; the method receives them as `inputs`)."""

    package: str
    # Methods whose run with the same family, budget and seed must train first: their
    # train_summary.json reaches this method as inputs["runs"][name] (HEST: TABS's energy).
    after: tuple[str, ...] = ()
    # Family artefacts read as inputs[name], by name (wattpeft/needs.py: "energy_table", the
    # profiled device's joules per FLOP; "device_table", "surrogate").
    needs: tuple[str, ...] = ()
    # A continual method (methods/continual.py): trained over a family's stream of tasks.
    continual: bool = False


METHODS: dict[str, Entry] = {
    "lora": Entry("wattpeft.methods.lora"),
    "adalora": Entry("wattpeft.methods.adalora"),
    "fw_lora": Entry("wattpeft.methods.fw_lora"),
    "bhsp": Entry("wattpeft.methods.bhsp", needs=("energy_table",)),
    "tabs": Entry("wattpeft.methods.tabs", needs=("energy_table",)),
    "hest": Entry("wattpeft.methods.hest", after=("tabs",), needs=("energy_table",)),
    "hest_fp16": Entry("wattpeft.methods.hest_fp16", after=("tabs",), needs=("energy_table",)),
    "hest_soft": Entry("wattpeft.methods.hest_soft", after=("tabs",), needs=("energy_table",)),
    "hest_unfactorised": Entry("wattpeft.methods.hest_unfactorised", after=("tabs",), needs=("energy_table",)),
    "digase": Entry("wattpeft.methods.digase"),
    "echorda": Entry("wattpeft.methods.echorda", needs=("device_table",)),
    "metas_peft": Entry("wattpeft.methods.metas_peft", needs=("surrogate",)),
    "lora_ewc": Entry("wattpeft.methods.lora_ewc", continual=True),
    "lilac": Entry("wattpeft.methods.lilac", continual=True),
    "himalaya": Entry("wattpeft.methods.himalaya", continual=True),
}


def method_names() -> list[str]:
    return sorted(METHODS)


def entry(name: str) -> Entry:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(method_names())}")
    return METHODS[name]


def _package(name: str) -> str:
    return entry(name).package


def get_method(name: str) -> type["AdapterMethod"]:
    """The method class registered under `name` (imports torch and peft)."""
    return importlib.import_module(f"{_package(name)}.model").Method


def method_config(name: str) -> type["MethodConfig"]:
    """The config class of the method registered under `name` (torch-free)."""
    return importlib.import_module(f"{_package(name)}.config").Config


def load_export(export_dir, task: str, label_names: list[str] | None):
    """The hardened model in `export_dir`, loaded by the method its export card names
    (export.json's `method`), the way peft's adapter config names its type."""
    import json
    from pathlib import Path

    card = Path(export_dir) / "export.json"
    if not card.exists():
        raise FileNotFoundError(f"{export_dir}: no export.json; not an export written by the harden stage")
    name = json.loads(card.read_text()).get("method")
    if name not in METHODS:
        raise ValueError(f"{card}: method {name!r} is not registered ({', '.join(method_names())})")
    return get_method(name).load_export(Path(export_dir), task, label_names)


__all__ = ["METHODS", "Entry", "entry", "get_method", "load_export", "method_config", "method_names"]
