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


def test_search_trials_train_with_the_search_seed_not_a_final_seed(tmp_path, monkeypatch):
    import wattpeft.stages.finetune as finetune
    from wattpeft.config import config_view

    raw = yaml.safe_load((ROOT / ".test/config.yaml").read_text())
    raw.update(mode="full", optuna={"n_trials": 2, "seed": 77,
                                    "search_space": {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}})
    cfg = validate_config(raw, base_dir=ROOT)
    search_cfg = config_view(resolve_run_config(cfg, "sentiment--lora--b5--s0"), "search")
    seeds = []

    class Outcome:
        validation = {"accuracy": 0.5}

    def fake_train(run_cfg, data, model_dir, **kwargs):
        seeds.append(run_cfg["seed"])
        kwargs["on_validation"]({"accuracy": 0.5})
        return None, None, Outcome()

    monkeypatch.setattr(finetune, "_train", fake_train)
    monkeypatch.setattr(finetune, "open_run_data", lambda d: None)
    result = finetune.run_search(search_cfg, tmp_path, tmp_path, tmp_path / "best.json")
    assert seeds == [77, 77] and result["search_seed"] == 77
    assert 77 not in cfg["families"]["sentiment"]["seeds"]
