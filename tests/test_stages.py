"""Stage functions on a tiny model and toy data: a run is reproducible from its seed."""

import shutil
from pathlib import Path

import pytest
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


def test_delta_norms_name_changed_linear_layers_as_the_base_model_does():
    from collections import OrderedDict

    from torch import nn

    from wattpeft.stages.harden import delta_norms, linear_weights

    torch.manual_seed(0)
    layer = nn.Sequential(OrderedDict(query=nn.Linear(4, 3), value=nn.Linear(4, 3), norm=nn.LayerNorm(3)))
    base = nn.Sequential(OrderedDict(encoder=nn.Sequential(OrderedDict(layer=nn.ModuleList([layer])))))
    snapshot = linear_weights(base)
    assert set(snapshot) == {"encoder.layer.0.query", "encoder.layer.0.value"}

    class Wrapper(nn.Module):  # like peft's PeftModel: names gain a base_model.model. prefix
        def __init__(self, model):
            super().__init__()
            self.base_model = nn.Module()
            self.base_model.model = model

    delta = torch.zeros(3, 4)
    delta[0, 0], delta[2, 1] = 3.0, 4.0  # ‖ΔW‖_F = 5
    with torch.no_grad():
        layer.query.weight += delta  # in place, as a merge does: the snapshot must be a copy
        layer.query.bias += 1.0  # a bias change is not a weight change
        layer.norm.weight += 1.0  # not a linear layer
    norms = delta_norms(snapshot, Wrapper(base))
    assert list(norms) == ["encoder.layer.0.query"]  # the unchanged value layer is absent
    assert norms["encoder.layer.0.query"] == pytest.approx(5.0, rel=1e-6)


def test_delta_norms_of_a_merged_lora_adapter(tmp_path):
    from helpers import make_method, tiny_bert

    from wattpeft.stages.harden import base_module_name, delta_norms, linear_weights

    method = make_method("lora")
    trained = method.attach(tiny_bert())
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)  # B starts at 0: give the adapter an update
        expected = {base_module_name(name): float(torch.linalg.matrix_norm(module.get_delta_weight("default")))
                    for name, module in trained.named_modules() if hasattr(module, "get_delta_weight")}
    method.save(trained, tmp_path / "adapter")

    base = tiny_bert()
    snapshot = linear_weights(base)  # before load: peft merges into base's own weights
    norms = delta_norms(snapshot, method.harden(method.load(base, tmp_path / "adapter")))
    assert "bert.encoder.layer.0.attention.self.query" in norms
    assert set(norms) == set(expected)  # the classifier is unchanged (same init): absent
    assert all(norms[name] == pytest.approx(value, rel=1e-4) for name, value in expected.items())


def test_per_module_data_for_metrics_json():
    from wattpeft.stages.evaluate import per_module_data

    card = {"delta_norms": {"bert.encoder.layer.0.attention.self.query": 0.5}}
    assert per_module_data(card, {"trainable_params": 10}) == {"delta_norm": card["delta_norms"]}
    importance = {"bert.encoder.layer.0.attention.self.query": 1.0}
    assert per_module_data(card, {"importance": importance})["importance"] == importance
    assert per_module_data({}, {}) == {"delta_norm": {}}


def _search_config(**optuna):
    from wattpeft.config import config_view

    raw = yaml.safe_load((ROOT / ".test/config.yaml").read_text())
    raw.update(mode=optuna.pop("mode", "full"), optuna={"n_trials": 3, "seed": 77, **optuna,
               "search_space": optuna.get("search_space", {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}})})
    cfg = validate_config(raw, base_dir=ROOT)
    return config_view(resolve_run_config(cfg, "sentiment--lora--b5--s0"), "search")


def _fake_search_training(monkeypatch) -> list:
    """Trials that train nothing (accuracy 0.5 at once); returns the list of configs trained."""
    import types

    import wattpeft.stages.finetune as finetune

    trained = []

    def fake_train(run_cfg, data, model_dir, **kwargs):
        trained.append(run_cfg)
        kwargs["on_validation"]({"accuracy": 0.5})
        return None, None, types.SimpleNamespace(validation={"accuracy": 0.5})

    monkeypatch.setattr(finetune, "_train", fake_train)
    monkeypatch.setattr(finetune, "open_run_data", lambda d: None)
    return trained


def test_the_search_stage_keeps_its_study_beside_its_output_and_resumes_it(tmp_path, monkeypatch):
    """results/search/{group}/study.journal: an unchanged rerun resumes (here: nothing left to
    run), a changed search space or code version starts a study of its own."""
    import wattpeft.stages.finetune as finetune

    trained = _fake_search_training(monkeypatch)
    out = tmp_path / "results/search/sentiment--lora--b5/best_params.json"
    first = finetune.run_search(_search_config(), tmp_path, tmp_path, out, code={"search": "c1"})
    assert len(trained) == 3 and (out.parent / "study.journal").is_file()
    assert first["study"]["name"].startswith("sentiment--lora--b5--")
    out.unlink()  # Snakemake removes the output before it reruns a job
    again = finetune.run_search(_search_config(), tmp_path, tmp_path, out, code={"search": "c1"})
    assert len(trained) == 3 and again["trials"] == first["trials"]
    wider = {"learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-1}}
    changed = [finetune.run_search(_search_config(search_space=wider), tmp_path, tmp_path, out, code={"search": "c1"}),
               finetune.run_search(_search_config(), tmp_path, tmp_path, out, code={"search": "c2"})]
    assert len(trained) == 9 and len({first["study"]["name"], *(r["study"]["name"] for r in changed)}) == 3


def test_trial_mode_searches_nothing_and_keeps_no_study(tmp_path, monkeypatch):
    import wattpeft.stages.finetune as finetune

    monkeypatch.setattr(finetune, "_train", None)  # a trial would fail
    out = tmp_path / "results/search/sentiment--lora--b5/best_params.json"
    result = finetune.run_search(_search_config(mode="trial"), tmp_path, tmp_path, out)
    assert result["searched"] is False and result["trials"] == [] and result["params"] == {}
    assert [p.name for p in out.parent.iterdir()] == ["best_params.json"]


def test_search_trials_are_never_logged(tmp_path, monkeypatch):
    """Only the final run is logged: real search trials on the tiny model write nothing under
    results/runs (no train log, no checkpoint) and never reach the W&B mirror."""
    import sys

    import wattpeft.stages.finetune as finetune
    import wattpeft.training.tracking as tracking

    def no_mirror(*args, **kwargs):
        raise AssertionError("a search trial reached the W&B mirror")

    monkeypatch.setattr(tracking, "mirror_to_wandb", no_mirror)
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing wandb would raise
    shutil.copytree(ROOT / ".test", tmp_path / ".test")
    monkeypatch.chdir(tmp_path)
    cfg = validate_config(yaml.safe_load((tmp_path / ".test/config.yaml").read_text()))
    model_dir, data_dir = tmp_path / "resources/models/tiny_bert", tmp_path / "data"
    build_tiny_model(cfg["models"]["tiny_bert"], model_dir)
    tokenise_dataset("toy_sentiment", cfg["datasets"]["toy_sentiment"], str(model_dir), data_dir, tmp_path / "resources")
    search_cfg = _search_config(n_trials=2)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "results/search/sentiment--lora--b5/best_params.json"
    result = finetune.run_search(search_cfg, data_dir, model_dir, out)
    assert [t["state"] for t in result["trials"]] == ["COMPLETE", "COMPLETE"]
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()} - {
        p.relative_to(tmp_path).as_posix() for p in before}
    assert written == {"results/search/sentiment--lora--b5/best_params.json",
                       "results/search/sentiment--lora--b5/study.journal",
                       "results/search/sentiment--lora--b5/study.journal.claim"}, written


def test_a_method_need_that_is_a_folder_is_hashed_by_its_content(tmp_path):
    """The search names its study after its inputs; MetaS-PEFT's surrogate store is a folder."""
    from wattpeft.stages.finetune import content_digest

    store = tmp_path / "store"
    store.mkdir()
    (store / "surrogate.json").write_text("{}")
    (store / "surrogate.safetensors").write_bytes(b"weights")
    before = content_digest(store)
    (store / "surrogate.safetensors").write_bytes(b"other weights")
    assert content_digest(store) != before and len(before) == 64
    assert content_digest(store / "surrogate.json") != content_digest(store)
