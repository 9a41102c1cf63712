"""Stage functions on a tiny model and toy data: a run is reproducible from its seed."""

import shutil
from pathlib import Path

import torch
import yaml

from wattpeft.assets import build_tiny_model
from wattpeft.config import resolve_run_config, validate_config
from wattpeft.data.tokenise import tokenise_dataset
from wattpeft.stages.common import open_run_data
from wattpeft.stages.finetune import _train

ROOT = Path(__file__).resolve().parents[1]


def test_same_seed_same_weights_different_seed_different(tmp_path, monkeypatch):
    shutil.copytree(ROOT / ".test", tmp_path / ".test")
    monkeypatch.chdir(tmp_path)
    cfg = validate_config(yaml.safe_load((tmp_path / ".test/config.yaml").read_text()))
    model_dir = tmp_path / "resources/models/tiny_bert"
    build_tiny_model(cfg["models"]["tiny_bert"], model_dir)
    data_dir = tmp_path / "data"
    tokenise_dataset("toy_sentiment", cfg["datasets"]["toy_sentiment"], str(model_dir), data_dir, tmp_path / "resources")
    data = open_run_data(data_dir)

    def weights(run_id):
        _, model, _ = _train(resolve_run_config(cfg, run_id), data, model_dir, progress=False)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    first, again = weights("sentiment--lora--b5--s0"), weights("sentiment--lora--b5--s0")
    other = weights("sentiment--lora--b5--s1")
    assert all(torch.equal(first[n], again[n]) for n in first)  # head and adapters included
    assert any(not torch.equal(first[n], other[n]) for n in first)
