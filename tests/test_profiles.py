"""Profiles: the SLURM profile's resources reach every job as written (profiles/default, the
workflow profile Snakemake applies on top of any --profile, must not override them), the
design card's bare `--profile slurm` resolves from the repository root, and a local run
keeps its defaults (one thread a job; a measuring job holds the whole host)."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
MEASURING = {"profile", "evaluate", "energy_table", "device_measure", "continual_evaluate"}
WHOLE_HOST = MEASURING | {"accuracy_matrix", "model_asset"}  # locally: every core of the host
GPU_RULES = {"search", "finetune", "profile", "energy_table", "evaluate", "device_measure", "continual_finetune",
             "accuracy_matrix"}
CONFIGS = (".test/config.yaml", ".test/hardware.yaml", ".test/continual.yaml")  # every kind of family
# Keys no local default may carry: they belong to cluster profiles only.
CLUSTER_KEYS = {"executor", "default-resources", "resources", "set-resources", "set-threads", "jobs"}


def planned(*args: str) -> list[tuple[str, int, dict[str, str]]]:
    """(rule, threads, resources) of every job forced dry runs of the test configs plan."""
    return [job for config in CONFIGS for job in planned_with(config, *args)]


def planned_with(config: str, *args: str) -> list[tuple[str, int, dict[str, str]]]:
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "--nolock", "--configfile", config, *args],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", out):
        head = re.match(r"rule (\w+):", block)
        if not head or head.group(1) == "all":
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = dict(item.split("=", 1) for item in resources.group(1).split(", ")) if resources else {}
        jobs.append((head.group(1), int(threads.group(1)) if threads else 1, pairs))
    return jobs


def test_the_workflow_profile_sets_nothing_a_cluster_profile_sets():
    local = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert CLUSTER_KEYS.isdisjoint(local), sorted(CLUSTER_KEYS & set(local))


def test_bare_profile_slurm_gives_every_job_the_resources_the_profile_states():
    # --cores 64: `--cores` caps threads, so this is what a 64-core login node plans.
    jobs = planned("--profile", "slurm", "--cores", "64")
    rules = {rule for rule, _, _ in jobs}
    assert {"finetune", "search", "profile", "evaluate", "energy_table", "harden", "tokenise",
            "device_measure", "surrogate", "surrogate_evaluation", "device_cost", "continual_finetune",
            "accuracy_matrix", "continual_evaluate"} <= rules
    for rule, threads, resources in jobs:
        stated = {**SLURM["default-resources"], **SLURM["set-resources"].get(rule, {})}
        for key, value in stated.items():
            got = resources.get(key, "").strip("'")
            assert got == str(value).strip("'"), f"{rule}: {key}={got!r}, the profile states {value!r}"
        assert ("gpu" in resources) == (rule in GPU_RULES), f"{rule}: gpu {resources.get('gpu')}"
        assert threads == SLURM["set-threads"].get(rule, 1), f"{rule}: {threads} threads"
    for rule in ("search", "finetune"):  # training states its runtime and memory
        assert {"runtime", "mem_mb"} <= set(SLURM["set-resources"][rule])


def test_a_local_run_keeps_its_defaults():
    jobs = planned("--cores", "2")
    for rule, threads, resources in jobs:
        assert not {"slurm_partition", "gpu", "cpus_per_task"} & set(resources), (rule, resources)
        expected = 2 if rule in WHOLE_HOST else 1
        assert threads == expected, f"{rule}: {threads} threads"
    assert MEASURING <= {rule for rule, _, _ in jobs}


def test_commands_without_cores_still_parse():
    """--unlock, --report and --list give no --cores: the rules' local defaults must not need it."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "profile" in proc.stdout.split()
