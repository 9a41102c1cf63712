"""Lazy package exports (PEP 562): `from wattpeft.data import X` still works, but importing
a light submodule (wattpeft.data.hub, wattpeft.report.kinds) does not import torch,
pandas or matplotlib. Snakemake parses the workflow through those light modules."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for `package`, whose submodule `m` provides `exports[m]`."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(f"{package}.{module}")
        # Importing a submodule binds its name on the package (report.aggregate is both a
        # module and a function): bind every export of it, as an eager import would.
        for export in exports[module]:
            setattr(sys.modules[package], export, getattr(loaded, export))
        return getattr(loaded, name)

    return __getattr__, sorted(module_of)
