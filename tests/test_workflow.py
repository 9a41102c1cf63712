"""The Snakemake workflow end to end on the small .test config (tiny models, toy files):
outputs, caching, scoped reruns, failures, single targets, the HTML report and lint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from wattpeft.evaluation.outputs import metrics_of_task
from wattpeft.report.kinds import FIGURE_KINDS
from wattpeft.stages.invalidate import read_records

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    "sentiment--fw_lora--b5--s0", "sentiment--fw_lora--b5--s1",
    "sentiment--lora--b5--s0", "sentiment--lora--b5--s1",
    "sentiment--adalora--b5--s0", "sentiment--adalora--b5--s1",
    "spectral--hest--b5--s0", "spectral--tabs--b5--s0", "spectral--lora--b5--s0",
]
FIGURES = FIGURE_KINDS

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, config: str = ".test/config.yaml", check: bool = True, root: Path = ROOT):
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"),
        "--configfile", config, "--cores", "2", "--workflow-profile", str(root / "profiles/default"),
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}  # a copied tree runs its own wattpeft
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str, config: str = ".test/config.yaml", root: Path = ROOT) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(workdir, "-n", *args, config=config, root=root)
    text = out.stdout + out.stderr
    jobs, rule = [], None
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\S+):$", line.strip()):
            rule = m.group(1)
            jobs.append((rule, ""))
        elif rule and line.strip().startswith("wildcards:"):
            jobs[-1] = (rule, line.strip()[len("wildcards: "):])
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("workflow")
    shutil.copytree(ROOT / ".test", wd / ".test")
    snakemake(wd)
    return wd


def test_every_stage_writes_its_outputs(workdir):
    agg = json.loads((workdir / "results/comparison/aggregated_metrics.json").read_text())
    for key in ("primary_metric", "metrics", "best_proposed", "best_baseline", "gap", "families"):
        assert key in agg
    assert agg["energy_sources"] == ["unavailable"]
    assert set(agg["metrics"]["accuracy"]) == {r for r in RUNS if r.startswith("sentiment")}
    for run in RUNS:
        metrics = json.loads((workdir / f"results/runs/{run}/metrics.json").read_text())
        assert metrics["energy_source"] == "unavailable"
        assert metrics["metrics"]["energy_j_per_sample"] is None  # never invented
        assert set(metrics_of_task(metrics["task"])) <= set(metrics["metrics"]), "config validation trusts these names"
        # 3 timed passes support a median, not a p99: it is null, never the sample maximum.
        assert metrics["metrics"]["latency_p50_ms"] > 0 and metrics["metrics"]["latency_p99_ms"] is None
        hardware = metrics["hardware"]
        assert hardware["profile_label"] == "auto" and hardware["device"].startswith("cpu-")
        assert hardware["eval_device"] == hardware["device"]  # measured where the job ran
        assert metrics["energy_flags"] == [] and metrics["energy_windows"] == {"valid": 0, "total": 2}
        assert metrics["budget_achieved_pct"] == metrics["metrics"]["achieved_budget_pct"] > 0
        config = json.loads((workdir / f"results/runs/{run}/config.json").read_text())
        for key in ("run_id", "method", "model", "dataset", "training", "optuna"):
            assert key in config
        for suffix in ("png", "pdf"):
            assert (workdir / f"results/runs/{run}/learning_curve.{suffix}").stat().st_size > 0
        (profile,) = (workdir / "results/profiles").glob(f"*/{run}.parquet")
        frame = pd.read_parquet(profile)
        assert frame["source"].eq("unavailable").all() and frame["j_per_sample_gross"].isna().all()
        # Per-module data: ||dW|| for every method; I_m from FW-LoRA only, summing to 1.
        per_module = metrics["per_module"]
        gated_apart = (workdir / f"results/exports/{run}/spectral_export.json").exists()  # W itself unchanged
        assert bool(per_module["delta_norm"]) != gated_apart and all(v >= 0 for v in per_module["delta_norm"].values())
        assert ("importance" in per_module) == (metrics["method"] == "fw_lora")
        if metrics["method"] == "fw_lora":
            assert sum(per_module["importance"].values()) == pytest.approx(1.0)
            assert set(per_module["importance"]) <= set(per_module["delta_norm"]) | {"bert.pooler.dense"}
    for family in ("sentiment", "spectral"):
        for kind in FIGURES:
            for suffix in ("png", "pdf"):
                assert (workdir / f"results/comparison/{family}/{kind}.{suffix}").stat().st_size > 0
    claims = json.loads((workdir / "results/comparison/claims.json").read_text())
    (row,) = claims["families"]["sentiment"]
    assert row["verdict"] in ("holds", "does not hold", "inconclusive at this n") and row["reason"]
    assert "FW-LoRA matches AdaLoRA" in (workdir / "results/comparison/claims.md").read_text()
    manifest = json.loads((workdir / "results/data/toy_sentiment/tiny_bert/manifest.json").read_text())
    for key in ("rows", "content_hash", "truncated_share"):
        assert key in manifest["splits"]["train"]
    assert "tokenizer" in manifest and "max_length" in manifest


def test_second_run_does_nothing(workdir):
    assert planned_jobs(workdir) == []


def test_changing_one_method_reruns_only_its_downstream(workdir):
    cfg = yaml.safe_load((workdir / ".test/config.yaml").read_text())
    cfg["methods"]["adalora"]["orth_reg_weight"] = 0.25
    (workdir / "changed.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(workdir, config="changed.yaml")
    per_run = [(rule, wc) for rule, wc in jobs if "run=" in wc or "group=" in wc]
    assert {rule for rule, _ in per_run} == {"search", "finetune", "harden", "profile", "evaluate", "learning_curve"}
    assert all("--adalora--" in wc for _, wc in per_run), per_run
    others = {rule for rule, wc in jobs if (rule, wc) not in per_run}
    assert "tokenise" not in others and "model_asset" not in others
    assert all("family=spectral" not in wc for _, wc in jobs)


def test_one_figure_is_a_target(workdir):
    target = workdir / "results/comparison/sentiment/latency.png"
    target.unlink()
    assert planned_jobs(workdir, "results/comparison/sentiment/latency.png") == [
        ("figure_latency", "family=sentiment")
    ]
    snakemake(workdir, "results/comparison/sentiment/latency.png")
    assert target.exists()


def test_one_family_runs_alone(workdir):
    jobs = planned_jobs(workdir, "--forceall", "results/comparison/spectral/aggregated_metrics.json")
    assert jobs and all("sentiment" not in wc for _, wc in jobs)
    assert ("aggregate_family", "family=spectral") in jobs


def test_a_family_out_of_the_default_run_is_one_target_away(workdir):
    assert not any("spectral_more" in wc for _, wc in planned_jobs(workdir, "--forceall"))
    jobs = planned_jobs(workdir, "results/comparison/spectral_more/aggregated_metrics.json")
    trained = {wc for rule, wc in jobs if rule == "finetune"}
    assert trained == {f"run=spectral_more--{m}--b5--s0" for m in ("tabs", "bhsp", "hest_soft")}


def test_hest_trains_after_tabs_and_its_export_reloads_through_the_registry(workdir):
    """HEST's E_max comes from TABS's run (its registry entry), wired by the rules; the
    hardened HEST is not a plain model, yet it was profiled and evaluated like the others."""
    hest_run, tabs_run = "spectral--hest--b5--s0", "spectral--tabs--b5--s0"
    (record,) = [r for r in read_records(workdir / "logs/jobs")
                 if r.get("rule") == "finetune" and r["wildcards"]["run"] == hest_run]
    assert any(f"results/runs/{tabs_run}/train_summary.json" in i for i in record["inputs"])
    tabs = json.loads((workdir / f"results/runs/{tabs_run}/train_summary.json").read_text())
    hest = json.loads((workdir / f"results/runs/{hest_run}/train_summary.json").read_text())
    reference = tabs["validation"]["modelled_adapter_j_per_sample"]
    assert hest["method_stats"]["e_max_j"] == pytest.approx(0.6 * reference)
    export = workdir / f"results/exports/{hest_run}"
    assert json.loads((export / "export.json").read_text())["method"] == "hest"
    assert (export / "spectral_export.json").exists()
    metrics = json.loads((workdir / f"results/runs/{hest_run}/metrics.json").read_text())
    m = metrics["metrics"]
    assert m["controller_params"] > 0 and m["e_max_j"] == pytest.approx(0.6 * reference)
    assert m["long_sample_tokens"] == 96 and m["e_max_worst_ratio"] <= 1.0  # the cap held by construction
    assert 0 < m["adapter_flop_share"] <= m["adapter_flop_share_max"] < 1
    assert metrics["energy_table"]["source"] == "default" and metrics["energy_table"]["reference"]
    assert set(metrics["per_layer"]["gate_utilisation"]) == {"off", "int8", "fp16"}
    lora = json.loads((workdir / "results/runs/spectral--lora--b5--s0/metrics.json").read_text())["metrics"]
    assert lora["controller_params"] == 0 and lora["modelled_adapter_j_per_sample"] == 0.0


def test_html_report_has_captions(workdir):
    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "standard error" in html
    assert "Claims" in html and "verdict" in html


def test_failed_job_leaves_no_output_and_downstream_reruns(workdir, tmp_path):
    wd = tmp_path / "copy"
    shutil.copytree(workdir, wd, symlinks=True)
    with open(wd / ".test/data/toy_sentiment.csv", "a") as fh:
        fh.write('"",positive\n')  # an empty sentence: the data check must refuse it
    failed = snakemake(wd, "results/comparison/sentiment/aggregated_metrics.json", check=False)
    assert failed.returncode != 0
    assert "empty or missing 'text'" in (wd / "logs/data/toy_sentiment-tiny_bert.log").read_text()
    assert not (wd / "results/data/toy_sentiment/tiny_bert").exists()
    assert not list((wd / "results").rglob(".*tmp*")), "a temporary file was left behind"
    jobs = planned_jobs(wd)
    rerun = {wc for rule, wc in jobs if rule == "evaluate"}
    assert rerun == {f"run={r}" for r in RUNS if r.startswith("sentiment")}, "stale downstream kept"


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


MEASURING = ("profile", "evaluate")


def test_measuring_jobs_ran_alone(workdir):
    """Latency and energy were never measured while another job ran (measuring rules hold WHOLE_HOST)."""
    records = read_records(workdir / "logs/jobs")
    assert {r["rule"] for r in records} >= {"finetune", *MEASURING}
    for job in (r for r in records if r["rule"] in MEASURING):
        overlapping = [other["rule"] for other in records if other is not job
                       and other["start"] < job["end"] and job["start"] < other["end"]]
        assert overlapping == [], f"{job['rule']} {job['wildcards']} ran beside {overlapping}"
    # Other jobs did run side by side: the check above is not vacuous.
    rest = sorted((r["start"], r["end"]) for r in records if r["rule"] not in MEASURING)
    assert any(b[0] < a[1] for a, b in zip(rest, rest[1:]))


def test_evaluation_and_logging_settings_retrain_nothing(workdir):
    cfg = yaml.safe_load((workdir / ".test/config.yaml").read_text())
    cfg["evaluation"]["latency_samples"] = 4
    cfg["wandb"] = {"mode": "disabled", "project": "renamed"}
    cfg["families"]["sentiment"]["methods"]["lora"]["role"] = "proposed"
    (workdir / "eval_changed.yaml").write_text(yaml.safe_dump(cfg))
    rules = {rule for rule, _ in planned_jobs(workdir, config="eval_changed.yaml")}
    assert "evaluate" in rules
    assert rules.isdisjoint({"search", "finetune", "harden", "profile", "tokenise", "learning_curve"}), rules


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "code"
    tree.mkdir()
    for part in ("Snakefile", "workflow", "scripts", "src", "profiles", "envs"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        copy(ROOT / part, tree / part, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                         if (ROOT / part).is_dir() else {}))
    return tree


def test_editing_any_module_reruns_every_rule_that_ran_it(workdir, tmp_path):
    """Edit each library module in turn: every rule whose jobs loaded it (recorded at run
    time, an oracle independent of the static import scan) must be planned again."""
    tree = copy_of_the_code(tmp_path)
    assert planned_jobs(workdir, "--nolock", root=tree) == [], "an unchanged copy of the code must rerun nothing"
    loaded: dict[str, set[str]] = {}
    for record in read_records(workdir / "logs/jobs"):
        for module in record["modules"]:
            loaded.setdefault(module, set()).add(record["rule"])
    modules = sorted((tree / "src").rglob("*.py"))
    assert len(modules) > 40
    misses, planned_by = {}, {}
    for path in modules:
        original = path.read_text()
        path.write_text(original + "\n_EDITED_BY_TEST = True\n")
        try:
            planned = {rule for rule, _ in planned_jobs(workdir, "--nolock", root=tree)}
        finally:
            path.write_text(original)
        name = ".".join(path.relative_to(tree / "src").with_suffix("").parts).removesuffix(".__init__")
        planned_by[name] = planned
        missing = loaded.get(name, set()) - planned
        if missing:
            misses[name] = sorted(missing)
    assert misses == {}, f"edits that did not rerun the rules that ran the module: {misses}"
    # And the hash is not one global key: editing a figure module retrains nothing.
    assert planned_by["wattpeft.report.figures"].isdisjoint({"search", "finetune", "harden", "profile"})
    assert "finetune" not in planned_by["wattpeft.energy.profiler"]


def test_editing_a_claim_reruns_the_claims_table_only(workdir):
    cfg = yaml.safe_load((workdir / ".test/config.yaml").read_text())
    cfg["families"]["sentiment"]["claims"][0]["tolerance"] = 0.05
    (workdir / "claim.yaml").write_text(yaml.safe_dump(cfg))
    assert {rule for rule, _ in planned_jobs(workdir, config="claim.yaml")} == {"claims", "all"}


def test_the_hardware_kind_of_family_end_to_end(tmp_path):
    """.test/hardware.yaml (seed 002's kind: a device table, the meta-surrogate, gated methods
    that need them): every row and cost says where it came from, MetaS-PEFT trains through
    the calibrated surrogate and EChorda through its 200-row (here 20) regression, and the
    exports are physically smaller where gates closed."""
    shutil.copytree(ROOT / ".test", tmp_path / ".test")
    snakemake(tmp_path, config=".test/hardware.yaml")
    table = pd.read_parquet(tmp_path / "results/devices/hardware/table.parquet")
    assert set(table["source"]) == {"simulated", "measured"}
    measured = table[table["source"] == "measured"]
    timed, four_bit = measured[measured["param_bits"] == 32], measured[measured["param_bits"] == 4]
    assert timed["latency_ms"].gt(0).all() and timed["energy_j"].isna().all()  # no counter here
    assert timed["unavailable"].str.contains("energy").all()
    assert four_bit["latency_ms"].isna().all() and four_bit["unavailable"].str.contains("4-bit").all()
    assert table.loc[table["source"] == "simulated", "provenance"].str.startswith("SIMULATED").all()
    evaluation = pd.read_parquet(tmp_path / "results/surrogate/hardware/evaluation.parquet")
    assert set(evaluation["held_out_device"]) == set(table["device"])
    assert (tmp_path / "results/surrogate/hardware/store/surrogate.json").is_file()
    for method, measurements in (("metas_peft", 5), ("echorda", 20), ("lora", 0)):
        run = f"hardware--{method}--b5--s0"
        metrics = json.loads((tmp_path / f"results/runs/{run}/metrics.json").read_text())
        assert metrics["device_cost"]["source"] == "simulated" and metrics["device_cost"]["device"] == "Pixel-8-TPU"
        assert metrics["metrics"]["on_device_measurements"] == measurements
        assert metrics["metrics"]["unseen_energy_j"] > 0 and metrics["metrics"]["surrogate_mape_latency_ms"] >= 0
        log = [json.loads(line) for line in (tmp_path / f"results/runs/{run}/train_log.jsonl").read_text().splitlines()]
        assert "loss_task" in log[0] and (method == "lora" or "loss_l0" in log[0])
    agg = json.loads((tmp_path / "results/comparison/hardware/aggregated_metrics.json").read_text())
    assert agg["hypervolume"]["cost_source"] == ["simulated"] and len(agg["surrogate_evaluation"]) == 4 * 9
    for kind in ("surrogate_accuracy", "hardware_table"):
        assert (tmp_path / f"results/comparison/hardware/{kind}.png").stat().st_size > 0


def test_the_continual_kind_of_family_end_to_end(tmp_path):
    """.test/continual.yaml (seed 003's kind: a stream of text-to-text tasks on a 4-bit tiny
    decoder): the stream runs through the continual rules only, every method's metrics come
    from its stored accuracy matrix, and the family's figures and claims are drawn."""
    shutil.copytree(ROOT / ".test", tmp_path / ".test")
    figures = [f"results/comparison/stream/{kind}.png" for kind in ("retained_accuracy", "accuracy_matrix", "adapter_norm")]
    # One thread each, so that the three matrices and evaluations may run side by side: no
    # latency is judged here (the local default, whole host for both, is in test_profiles.py).
    snakemake(tmp_path, "results/comparison/claims.json", *figures, "--set-threads", "accuracy_matrix=1",
              "continual_evaluate=1", config=".test/continual.yaml")
    ran = {r["rule"] for r in read_records(tmp_path / "logs/jobs")}
    assert {"continual_finetune", "accuracy_matrix", "continual_evaluate"} <= ran
    assert not {"finetune", "harden", "profile", "evaluate"} & ran
    for method in ("himalaya", "lilac", "lora_ewc"):
        run = tmp_path / f"results/runs/stream--{method}--b1--s0"
        record = json.loads((run / "metrics.json").read_text())
        matrix = json.loads((run / "accuracy_matrix.json").read_text())
        assert record["continual"]["accuracy_matrix"] == matrix["accuracy_matrix"]
        assert record["continual"]["tasks"] == ["toy_reviews", "toy_summaries", "toy_verdicts"]
        assert set(record["metrics"]) == set(metrics_of_task("stream"))
        assert record["hardware"]["backbone_precision"] == "nf4"
        assert sorted(p.name for p in (run / "snapshots").glob("task-*")) == ["task-00", "task-01", "task-02"]
    agg = json.loads((tmp_path / "results/comparison/stream/aggregated_metrics.json").read_text())
    assert agg["primary_metric"] == "retained_auc" and all("continual" in r for r in agg["runs"].values())
    assert all((tmp_path / figure).stat().st_size > 0 for figure in figures)
    claims = json.loads((tmp_path / "results/comparison/claims.json").read_text())
    assert [c["metric"] for c in claims["families"]["stream"]] == ["forgetting_max_pp"]
