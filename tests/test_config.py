"""Config validation: a bad config names its field and fails fast; run ids and merging."""

import copy
import re
import shutil
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
        (lambda c: c["families"]["fwlora_rt"]["methods"].update(magic={"role": "baseline"}), "families.fwlora_rt.methods"),
        (lambda c: c["training"].update(epochs="two"), "training.epochs"),
        (lambda c: c["families"]["fwlora_rt"].update(dataset="imdb"), "families.fwlora_rt.dataset"),
        (lambda c: c.update(threads=4), "threads (unknown key)"),
        (lambda c: c["training"].update(gpus=1), "training.gpus (unknown key)"),
        (lambda c: c.update(mode="quick"), "mode"),
        (lambda c: c["families"]["fwlora_rt"].update(model="bert-large"), "families.fwlora_rt.model"),
        (lambda c: c["families"]["fwlora_rt"].update(budgets=[-1]), "families.fwlora_rt.budgets.0"),
    ],
)
def test_bad_config_names_the_field(raw, mutate, field):
    mutate(raw)
    assert field in _error(raw)


def _set(path: str, value):
    """A mutation that sets config field `path` (dots between keys) to `value`."""

    def mutate(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


SPACE = "optuna.search_space.learning_rate"
# Values that the schema accepts but that would fail inside a job (or, worse, silently do
# something else): each must stop validation, naming its field.
LATE_FAILURES = [
    (_set(SPACE, {"type": "loguniform", "low": 1e-3, "high": 1e-4}), SPACE),
    (_set(SPACE, {"type": "loguniform", "low": 0.0, "high": 1e-3}), SPACE + ".low"),
    (_set(SPACE, {"type": "uniform", "low": 0.1}), SPACE),
    (_set(SPACE, {"type": "categorical"}), SPACE + ".choices"),
    (_set("optuna.search_space.epochs", {"type": "int", "low": 1.5, "high": 3}), "optuna.search_space.epochs"),
    (_set("optuna.search_space.learning_rat", {"type": "uniform", "low": 0.1, "high": 0.2}), "learning_rat"),
    (_set("families.fwlora_rt.methods.adalora.optuna", {"search_space": {"alpha": {"type": "categorical", "choices": [8]},
                                                                        "init_rnk_ratio": {"type": "categorical", "choices": [2]}}}),
     "families.fwlora_rt.methods.adalora.optuna.search_space.init_rnk_ratio"),
    (_set("methods.lora.alhpa", 16), "alhpa"),
    (_set("methods.lora.dropout", 1.5), "dropout"),
    (_set("methods.adalora.target_rank_ratio", 0.5), "target_rank_ratio"),
    (_set("families.fwlora_rt.methods.lora", {"role": "baseline", "rank": "eight"}), "rank"),
    (_set("families.fwlora_rt.primary_metric", {"name": "rougeL", "direction": "maximize"}), "families.fwlora_rt.primary_metric.name"),
    (_set("families.spectral.primary_metric", {"name": "accuracy", "direction": "maximize"}), "families.spectral.primary_metric.name"),
    (_set("families.fwlora_rt.primary_metric", {"name": "acuracy", "direction": "maximize"}), "families.fwlora_rt.primary_metric.name"),
    (_set("datasets.rt_sentiment", {"source": "local", "path": "data/missing.csv", "format": "csv",
                                     "task": "classification", "columns": {"text": "t", "label": "l"}}), "datasets.rt_sentiment.path"),
    (_set("models.minilm", {"source": "local", "path": "no/such/model"}), "models.minilm.path"),
    (_set("models.minilm", {"source": "asset", "asset": "bert-large"}), "models.minilm.asset"),
    (_set("models.minilm", {"source": "asset", "asset": "aclsum"}), "models.minilm.asset"),
    (_set("datasets.aclsum.asset", "smollm2-135m"), "datasets.aclsum.asset"),
    (_set("models.minilm", {"source": "tiny", "arch": "bert", "hidden_size": 30, "num_heads": 4}), "models.minilm.num_heads"),
    (_set("datasets.rt_sentiment.split_ratios", [0.5, 0.3, 0.3]), "datasets.rt_sentiment.split_ratios"),
    (_set("optuna.seed", 1), "optuna.seed"),
    (_set("profiling.max_window_s", 0.5), "profiling.max_window_s"),
    (_set("profiling.tdp_watts", 300), "profiling.tdp_watts"),
    (_set("methods.magic", {}), "methods.magic"),
]


@pytest.mark.parametrize("mutate, field", LATE_FAILURES)
def test_values_that_would_fail_in_a_job_fail_at_validation(raw, mutate, field):
    mutate(raw)
    assert field in _error(raw)


def test_every_problem_is_listed_at_once(raw):
    raw["methods"]["lora"]["alhpa"] = 16
    raw["optuna"]["search_space"]["learning_rate"]["low"] = 1.0
    message = _error(raw)
    assert "alhpa" in message and "optuna.search_space.learning_rate" in message


def test_each_stage_reads_only_its_view_so_evaluation_and_roles_retrain_nothing(raw):
    from wattpeft.config import config_view

    def views(cfg):
        run = resolve_run_config(validate_config(copy.deepcopy(cfg)), "fwlora_rt--lora--b0.5--s0")
        return {view: config_view(run, view) for view in ("train", "search", "evaluate", "log")}

    before = views(raw)
    raw["evaluation"]["latency_samples"] = 7
    raw["wandb"]["project"] = "elsewhere"
    raw["families"]["fwlora_rt"]["methods"]["lora"]["role"] = "proposed"
    after = views(raw)
    assert after["train"] == before["train"] and after["search"] == before["search"]
    assert after["evaluate"] != before["evaluate"] and after["log"] != before["log"]


def test_resources_stay_out_of_the_schema():
    """Job resources belong to profiles (profiling.measure_threads is a measurement setting)."""
    schema = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    for key in ("threads", "mem_mb", "gpus", "gpu", "cpus_per_task", "runtime"):
        assert not re.search(rf"(?m)^\s*{key}:", schema), key


def test_trial_mode_caps_training_and_disables_search(raw):
    raw["mode"] = "trial"
    cfg = validate_config(raw)
    run = resolve_run_config(cfg, "fwlora_rt--lora--b0.5--s1")
    assert run["training"]["epochs"] == 1
    assert run["training"]["max_batches_per_epoch"] == 2
    assert run["optuna"]["n_trials"] == 0
    assert run["wandb"]["mode"] == "disabled"


def test_resolved_config_has_seed001_fields_and_family_overrides(raw):
    cfg = validate_config(raw)
    run = resolve_run_config(cfg, "spectral--lora--b0.34--s0")
    for key in ("run_id", "method", "model", "dataset", "training", "optuna"):
        assert key in run
    assert run["training"]["batch_size"] == raw["families"]["spectral"]["training"]["batch_size"]
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
    key = parse_run_id("fwlora_rt--adalora--b0.5--s2")
    assert (key.family, key.method, key.budget, key.seed) == ("fwlora_rt", "adalora", 0.5, 2)
    with pytest.raises(ConfigError):
        parse_run_id("sentiment-lora")
    run = resolve_run_config(cfg, key.run_id)
    tuned = apply_params(run, {"learning_rate": 1e-4, "orth_reg_weight": 0.2})
    assert tuned["training"]["learning_rate"] == 1e-4
    assert tuned["method_params"]["orth_reg_weight"] == 0.2
    assert tuned["config_hash"] != run["config_hash"]


def test_snakemake_rejects_bad_config_fast_and_starts_no_job(tmp_path, raw):
    raw["families"]["fwlora_rt"]["methods"]["nonsense"] = {"role": "baseline"}
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
    assert "families.fwlora_rt.methods" in proc.stdout + proc.stderr
    assert elapsed < 5.0, f"rejecting a bad config took {elapsed:.1f} s"
    assert not (tmp_path / "work" / "results").exists()


def test_a_method_can_override_the_search_space(raw):
    space = {"learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}
    raw["families"]["fwlora_rt"]["methods"]["adalora"] = {"role": "baseline", "optuna": {"search_space": space}}
    cfg = validate_config(raw)
    ada = resolve_run_config(cfg, "fwlora_rt--adalora--b0.5--s0")
    lora = resolve_run_config(cfg, "fwlora_rt--lora--b0.5--s0")
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


def test_parsing_the_workflow_imports_neither_torch_nor_matplotlib():
    """Snakemake parses through these modules: a dry run must not pay for torch (about 1.2 s)."""
    code = ("import sys, yaml; from wattpeft.config import validate_config; from wattpeft import codehash; "
            "from wattpeft.report.kinds import FIGURE_KINDS; from wattpeft.methods import METHODS; "
            f"validate_config(yaml.safe_load(open({str(ROOT / 'config.yaml')!r}))); "
            f"codehash.code_version({str(ROOT / 'scripts/finetune.py')!r}); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers', 'pandas') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_a_profiling_device_name_of_ones_choosing_names_the_profiles(tmp_path):
    """profiling.device may be any name; `auto` is resolved by each job, not at parse time."""
    shutil.copytree(ROOT / ".test", tmp_path / ".test")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", ".test/config.yaml",
         "--config", "profiling={'device': 'lab-a100-node3'}", "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "results/profiles/lab-a100-node3/sentiment--lora--b5--s0.parquet" in proc.stdout + proc.stderr


def _claim(**fields) -> dict:
    entry = {"claim": "LoRA matches AdaLoRA", "seed": "004", "metric": "accuracy", "budget": 0.5,
             "method": "lora", "against": "adalora", "comparison": "matches", "tolerance": 0.01}
    return {**entry, **fields}


# Claims the schema accepts but that could never be checked: each names its field.
@pytest.mark.parametrize(
    "claim, field",
    [
        (_claim(method="dora"), "families.fwlora_rt.claims[0].method"),
        (_claim(against="dora"), "families.fwlora_rt.claims[0].against"),
        (_claim(against="lora"), "families.fwlora_rt.claims[0].against"),
        (_claim(metric="acuracy"), "families.fwlora_rt.claims[0].metric"),
        (_claim(metric="rougeL"), "families.fwlora_rt.claims[0].metric"),
        (_claim(comparison="value", seed_values={"adalora": 0.9}), "families.fwlora_rt.claims[0].seed_values"),
    ],
)
def test_a_claim_names_this_familys_methods_and_a_metric_of_its_task(raw, claim, field):
    raw["families"]["fwlora_rt"]["claims"] = [claim]
    assert field in _error(raw)


def test_a_method_can_override_training_settings_for_its_runs_only(raw):
    raw["families"]["fwlora_rt"]["methods"]["adalora"]["training"] = {"learning_rate": 3e-2}
    cfg = validate_config(raw)
    ada = resolve_run_config(cfg, "fwlora_rt--adalora--b0.5--s0")
    lora = resolve_run_config(cfg, "fwlora_rt--lora--b0.5--s0")
    assert ada["training"]["learning_rate"] == 3e-2 and "training" not in ada["method_params"]
    assert lora["training"]["learning_rate"] == raw["families"]["fwlora_rt"]["training"]["learning_rate"]
    raw["families"]["fwlora_rt"]["methods"]["adalora"]["training"] = {"learning_rat": 3e-2}
    assert "families.fwlora_rt.methods.adalora.training.learning_rat (unknown key)" in _error(raw)


def _planned_counts(config: str, tmp_path: Path) -> dict[str, str]:
    """Jobs per rule that a dry run of configs/<config> plans in an empty folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(ROOT / "configs" / config),
         "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))


def test_the_seed_000_config_validates_and_plans_hest_after_tabs(tmp_path):
    """configs/seed000.yaml (Llama-2-7B-chat on CNN/DailyMail, needs a hub): it validates,
    carries the seed's R, k and E_max ratio, and a dry run plans 7 methods x 3 seeds with
    each HEST-family run after TABS's run of the same seed."""
    cfg = load_config(ROOT / "configs" / "seed000.yaml")
    fam = cfg["families"]["spectral_cnndm"]
    assert (fam["methods"]["hest"]["rank"], fam["methods"]["hest"]["controller_dim"]) == (16, 32)
    assert fam["methods"]["hest"]["energy_ratio"] == 0.6 and cfg["datasets"]["cnn_dailymail"]["max_length"] == 4096
    assert len(list(iter_runs(cfg))) == 21
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(ROOT / "configs" / "seed000.yaml"),
         "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile"), "--printshellcmds"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    assert counts.get("finetune") == "21" and counts.get("energy_table") == "1", proc.stdout[-2000:]


def test_the_seed_004_config_validates_and_plans_every_run(tmp_path):
    """configs/seed004.yaml (roberta-base on GLUE, needs a hub) is checked here without one:
    it validates, and a dry run plans 3 methods x 3 budgets x 3 seeds x 2 tasks."""
    cfg = load_config(ROOT / "configs" / "seed004.yaml")
    assert len(list(iter_runs(cfg))) == 54
    assert {c["seed"] for fam in cfg["families"].values() for c in fam["claims"]} == {"004"}
    counts = _planned_counts("seed004.yaml", tmp_path)
    assert counts.get("finetune") == "54" and counts.get("profile") == "54", counts


def test_the_seed_002_config_validates_and_plans_the_device_table_and_surrogate(tmp_path):
    """configs/seed002.yaml (Llama-2-7B on SST-2, needs a hub): it validates, carries the
    seed's budgets on the unseen Pixel-8, and a dry run plans every device's rows, the
    surrogate MetaS-PEFT trains through, its evaluation and each export's cost."""
    cfg = load_config(ROOT / "configs" / "seed002.yaml")
    fam = cfg["families"]["hwgate_llama2"]
    meta = fam["methods"]["metas_peft"]
    assert (meta["energy_budget_j"], meta["latency_budget_ms"], meta["power_budget_w"]) == (6.0, 80.0, 11.0)
    assert fam["surrogate"]["unseen_device"] == "Pixel-8-TPU" and fam["methods"]["echorda"]["n_measurements"] == 200
    assert len(list(iter_runs(cfg))) == 12
    counts = _planned_counts("seed002.yaml", tmp_path)
    expected = {"device_simulate": "6", "device_measure": "1", "device_table": "1", "surrogate": "1",
                "surrogate_evaluation": "1", "finetune": "12", "device_cost": "12"}
    assert {rule: counts.get(rule) for rule in expected} == expected, counts


def test_the_seed_003_config_validates_and_plans_the_stream(tmp_path):
    """configs/seed003.yaml (Llama-2-7B in 4-bit, 25 hub tasks): it validates as a stream
    family, and a dry run plans each method's stream training, its accuracy matrix over the
    25 tokenised tasks and its metrics, through the continual rules only."""
    cfg = load_config(ROOT / "configs" / "seed003.yaml")
    fam = cfg["families"]["continual"]
    assert len(fam["stream"]["tasks"]) == 25 and fam["backbone_precision"] == "nf4"
    assert len(list(iter_runs(cfg))) == 3
    counts = _planned_counts("seed003.yaml", tmp_path)
    expected = {"tokenise": "25", "continual_finetune": "3", "accuracy_matrix": "3", "continual_evaluate": "3"}
    assert {rule: counts.get(rule) for rule in expected} == expected, counts
    assert "finetune" not in counts and "evaluate" not in counts and "harden" not in counts, counts


@pytest.mark.parametrize("edit, message", [
    (lambda fam: fam["devices"]["simulate"].append("Pixel-9"), "devices.simulate: unknown device(s) ['Pixel-9']"),
    (lambda fam: fam["devices"].update({"import": {"lab-jetson": "missing/jetson.csv"}}),
     "devices.import.lab-jetson.path: CSV 'missing/jetson.csv' does not exist"),
    (lambda fam: fam["surrogate"].update(unseen_device="Pixel-9"), "surrogate.unseen_device: 'Pixel-9' is not among"),
    (lambda fam: fam["surrogate"]["training"].update(stepz=3), "surrogate.training.stepz: unknown key"),
    (lambda fam: fam.pop("devices"), "surrogate: needs a devices section"),
    (lambda fam: fam["methods"]["metas_peft"].update(seq_len=128),
     "methods.metas_peft.seq_len: 128 differs from the family's surrogate.seq_len 48"),
    (lambda fam: fam["methods"]["echorda"].update(target_device="RTX-A6000"),
     "methods.echorda.target_device: 'RTX-A6000' differs from the family's surrogate.unseen_device 'Pixel-8-TPU'"),
    (lambda fam: (fam.pop("surrogate"), fam.pop("devices")), "methods.echorda: needs the family's devices section"),
])
def test_a_bad_hardware_family_is_refused_before_any_job(raw, edit, message):
    edit(raw["families"]["hwgate"])
    assert message in _error(raw)


STREAM_CONFIG = ROOT / ".test" / "continual.yaml"


@pytest.mark.parametrize("edit, message", [
    (lambda cfg: cfg["families"]["stream"]["methods"].update(lora={"role": "baseline"}),
     "families.stream.methods.lora: not a continual method"),
    (lambda cfg: cfg["datasets"]["toy_summaries"].pop("cast"),
     "families.stream.stream.tasks[1]: dataset 'toy_summaries' needs cast: text2text"),
    (lambda cfg: cfg["families"]["stream"]["stream"]["tasks"].append("toy_missing"),
     "families.stream.stream.tasks[3]: unknown dataset 'toy_missing'"),
    (lambda cfg: cfg["families"]["stream"].update(dataset="toy_reviews"), "families.stream"),
    (lambda cfg: cfg["families"].update(one={**cfg["families"]["stream"], "stream": None} | {"dataset": "toy_reviews"}),
     "families.one"),
    (lambda cfg: cfg.update(mode="full", optuna={"n_trials": 2}),
     "families.stream.methods.himalaya: optuna.n_trials is 2; a stream is not searched"),
    (lambda cfg: cfg["datasets"]["toy_verdicts"].update(label_words=["bad", "good", "meh"]),
     "datasets.toy_verdicts.label_words"),
])
def test_a_bad_stream_family_is_refused_naming_the_field(edit, message):
    cfg = yaml.safe_load(STREAM_CONFIG.read_text())
    edit(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg, source="config", base_dir=ROOT)


def test_a_continual_method_outside_a_stream_is_refused():
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    family = next(iter(cfg["families"].values()))
    family["methods"]["himalaya"] = {"role": "baseline"}
    with pytest.raises(ConfigError, match=r"methods\.himalaya: a continual method needs a family with a stream"):
        validate_config(cfg, source="config", base_dir=ROOT)
