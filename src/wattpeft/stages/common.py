"""What every stage does first: pin threads, keep the hub offline-friendly, and open the
tokenised data and model that a run uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def pin_threads(threads: int) -> None:
    """Use exactly the cores Snakemake gave this job (a profile sets them, not config.yaml)."""
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


@dataclass
class RunData:
    task: str
    label_names: list[str] | None
    data_hash: str
    manifest: dict[str, Any]
    data_dir: Path

    def load_model(self, source: str | Path):
        """(tokenizer, model) for this data's task: the head matches its labels."""
        from ..models import load_backbone, load_tokenizer

        return load_tokenizer(source), load_backbone(source, self.task, self.label_names)

    def load_export(self, export_dir: str | Path):
        """(tokenizer, hardened model) of an export, loaded by the method its card names."""
        from ..methods import load_export
        from ..models import load_tokenizer

        return load_tokenizer(export_dir), load_export(Path(export_dir), self.task, self.label_names)

    def split(self, name: str):
        from ..data.loading import load_split

        return load_split(self.data_dir, name)

    def frame(self, name: str):
        import pandas as pd

        return pd.read_parquet(self.data_dir / f"{name}.parquet")


def open_run_data(data_dir: str | Path) -> RunData:
    from ..data.loading import read_manifest
    from ..utils.io import stable_hash

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    return RunData(
        task=manifest["task"],
        label_names=manifest.get("label_names"),
        data_hash=stable_hash({s: v.get("content_hash") for s, v in manifest["splits"].items()}),
        manifest=manifest,
        data_dir=data_dir,
    )


def model_source(model_dir: str | Path) -> str:
    """What from_pretrained gets: the folder, or the hub id/path its manifest points at."""
    from ..utils.io import read_json

    model_dir = Path(model_dir)
    manifest = read_json(model_dir / "manifest.json")
    return str(manifest.get("from_pretrained") or model_dir)


def method_needs(rule_inputs) -> dict[str, str]:
    """The method inputs among a rule's named inputs (common.smk's `needs_of`)."""
    from ..needs import NEED_PATHS

    return {k: v for k, v in rule_inputs.items() if k in NEED_PATHS or k.startswith("after_")}


def read_method_inputs(paths: dict[str, str | Path] | None) -> dict[str, Any]:
    """What a method's registry entry asked for, read from the files the rule wired: each
    named artefact (wattpeft/needs.py) as inputs[name]; `after_<method>` -> that run's
    train summary, under inputs["runs"][method]."""
    from ..needs import read_need
    from ..utils.io import read_json

    inputs: dict[str, Any] = {"runs": {}}
    for key, path in (paths or {}).items():
        if key.startswith("after_"):
            inputs["runs"][key.removeprefix("after_")] = read_json(path)
        else:
            inputs[key] = read_need(key, path)
    return inputs
