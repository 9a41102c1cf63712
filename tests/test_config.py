"""Config validation: a bad config names its field and fails fast; run ids and merging."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from wattpeft.config import (
    ConfigError,
    apply_params,
    iter_runs,
    load_config,
    parse_run_id,
    resolve_run_config,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    return str(info.value)


def test_default_config_is_valid():
    cfg = load_config(ROOT / "config.yaml")
    assert cfg["mode"] in ("trial", "full")
    assert len(list(iter_runs(cfg))) >= 2


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c["families"]["sentiment"]["methods"].update(magic={"role": "baseline"}), "families.sentiment.methods"),
        (lambda c: c["training"].update(epochs="two"), "training.epochs"),
        (lambda c: c["families"]["sentiment"].update(dataset="imdb"), "families.sentiment.dataset"),
        (lambda c: c.update(threads=4), "threads (unknown key)"),
        (lambda c: c["training"].update(gpus=1), "training.gpus (unknown key)"),
        (lambda c: c.update(mode="quick"), "mode"),
        (lambda c: c["families"]["sentiment"].update(model="bert-large"), "families.sentiment.model"),
        (lambda c: c["families"]["sentiment"].update(budgets=[-1]), "families.sentiment.budgets.0"),
    ],
)
def test_bad_config_names_the_field(raw, mutate, field):
    mutate(raw)
    assert field in _error(raw)


def test_resources_stay_out_of_the_schema():
    schema = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    for word in ("threads:", "mem_mb", "gpus:", "cpus_per_task"):
        assert word not in schema


def test_trial_mode_caps_training_and_disables_search(raw):
    raw["mode"] = "trial"
    cfg = validate_config(raw)
    run = resolve_run_config(cfg, "sentiment--lora--b0.5--s1")
    assert run["training"]["epochs"] == 1
    assert run["training"]["max_batches_per_epoch"] == 2
    assert run["optuna"]["n_trials"] == 0
    assert run["wandb"]["mode"] == "disabled"


def test_resolved_config_has_seed001_fields_and_family_overrides(raw):
    cfg = validate_config(raw)
    run = resolve_run_config(cfg, "summarisation--lora--b0.1--s0")
    for key in ("run_id", "method", "model", "dataset", "training", "optuna"):
        assert key in run
    assert run["training"]["batch_size"] == raw["families"]["summarisation"]["training"]["batch_size"]
    assert run["training"]["weight_decay"] == raw["training"]["weight_decay"]  # inherited
    assert run["model"]["name"] == "smollm2"


def test_changing_one_method_changes_only_its_runs(raw):
    before = validate_config(copy.deepcopy(raw))
    raw["methods"]["adalora"]["orth_reg_weight"] = 0.1
    after = validate_config(raw)
    for key in iter_runs(after):
        same = resolve_run_config(before, key.run_id) == resolve_run_config(after, key.run_id)
        assert same == (key.method != "adalora"), key.run_id


def test_run_id_round_trip_and_tuned_params(raw):
    cfg = validate_config(raw)
    key = parse_run_id("sentiment--adalora--b0.5--s2")
    assert (key.family, key.method, key.budget, key.seed) == ("sentiment", "adalora", 0.5, 2)
    with pytest.raises(ConfigError):
        parse_run_id("sentiment-lora")
    run = resolve_run_config(cfg, key.run_id)
    tuned = apply_params(run, {"learning_rate": 1e-4, "orth_reg_weight": 0.2})
    assert tuned["training"]["learning_rate"] == 1e-4
    assert tuned["method_params"]["orth_reg_weight"] == 0.2
    assert tuned["config_hash"] != run["config_hash"]


def test_snakemake_rejects_bad_config_fast_and_starts_no_job(tmp_path, raw):
    raw["families"]["sentiment"]["methods"]["nonsense"] = {"role": "baseline"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(bad),
         "--directory", str(tmp_path / "work"), "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "families.sentiment.methods" in proc.stdout + proc.stderr
    assert elapsed < 5.0, f"rejecting a bad config took {elapsed:.1f} s"
    assert not (tmp_path / "work" / "results").exists()


def test_a_method_can_override_the_search_space(raw):
    space = {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}
    raw["families"]["sentiment"]["methods"]["adalora"] = {"role": "baseline", "optuna": {"search_space": space}}
    cfg = validate_config(raw)
    ada = resolve_run_config(cfg, "sentiment--adalora--b0.5--s0")
    lora = resolve_run_config(cfg, "sentiment--lora--b0.5--s0")
    assert ada["optuna"]["search_space"] == space and "optuna" not in ada["method_params"]
    assert lora["optuna"]["search_space"] == raw["optuna"]["search_space"]


def test_reordered_config_resolves_identically(raw):
    """Snakemake compares params by representation: key order must not matter."""
    reordered = yaml.safe_load(yaml.safe_dump(raw, sort_keys=True))
    for key in iter_runs(validate_config(copy.deepcopy(raw))):
        a = resolve_run_config(validate_config(copy.deepcopy(raw)), key.run_id)
        b = resolve_run_config(validate_config(copy.deepcopy(reordered)), key.run_id)
        assert repr(a) == repr(b)


def test_config_overrides_apply_on_top_of_the_default(tmp_path):
    """`--config mode=trial` keeps config.yaml and overrides one key (dry run, no job)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", "mode=trial",
         "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rule finetune" in proc.stdout + proc.stderr
