"""Data stage: raw rows -> splits -> tokenised parquet with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import model_source, pin_threads

RESOURCES = Path("resources")


def run_tokenise(name: str, spec: dict[str, Any], model_dir: Path, out_dir: Path, threads: int = 1) -> dict:
    from ..data.tokenise import tokenise_dataset

    pin_threads(threads)
    return tokenise_dataset(name, spec, model_source(model_dir), Path(out_dir), RESOURCES)
