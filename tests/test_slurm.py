"""A real SLURM: .ci/slurm_cluster.sh starts a one-node cluster on this machine, and a small
target runs through the SLURM executor with the design card's own command line
(`snakemake --cores all --profile slurm`, from the repository root). Each job must have
gone through sbatch with the resources profiles/slurm states. Skipped, saying why, only
where this machine cannot run SLURM (the script exits 3: not root, no apt-get, no install)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / ".ci/slurm_cluster.sh"
TARGET = "results/data/toy_sentiment/tiny_bert"  # model_asset, then tokenise: light CPU rules
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*/slurm_logs/rule_(\w+)/")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(f"this machine cannot run SLURM: {started.stderr.strip()}")
    assert started.returncode == 0, f"{CLUSTER} start failed:\n{started.stdout}\n{started.stderr}"
    yield
    subprocess.run([str(CLUSTER), "stop"], capture_output=True, text=True)
    # Left configured with its controller down, SLURM would make every later Snakemake
    # start wait ~9 s (the executor plugin probes `scontrol show config` on import).
    assert not Path("/etc/slurm/slurm.conf").exists(), "the cluster's slurm.conf was left behind"


def repository_copy(tmp_path: Path) -> Path:
    tree = tmp_path / "repo"
    tree.mkdir()
    for part in ("Snakefile", "workflow", "scripts", "src", "profiles", "envs", ".test"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / part, tree / part)
    (tree / "slurm").symlink_to(os.readlink(ROOT / "slurm"))  # the bare `--profile slurm`
    return tree


def job_record(job_id: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w[\w/:]*)=(\S*)", text))


def test_a_target_runs_through_sbatch_with_the_profiles_resources(cluster, tmp_path):
    repo = repository_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "all", "--profile", "slurm",
         "--configfile", ".test/config.yaml", "--slurm-init-seconds-before-status-checks", "2", TARGET],
        cwd=repo, capture_output=True, text=True, env=env, timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (repo / TARGET / "manifest.json").is_file()
    submitted = dict((rule, job) for job, rule in SUBMITTED.findall(log))
    assert set(submitted) == {"model_asset", "tokenise"}, log[-4000:]
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    for rule, job_id in submitted.items():
        stated = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        record = job_record(job_id)
        assert record["JobState"] == "COMPLETED", (rule, record)
        assert record["Partition"] == stated["slurm_partition"], (rule, record["Partition"])
        assert int(record["NumCPUs"]) == stated["cpus_per_task"], (rule, record["NumCPUs"])
        assert record["MinMemoryNode"] == f"{stated['mem_mb']}M", (rule, record["MinMemoryNode"])
        hours, minutes = divmod(stated["runtime"], 60)
        assert record["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (rule, record["TimeLimit"])
