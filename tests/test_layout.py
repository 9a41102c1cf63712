"""The repository keeps its promises about layout: thin scripts, schema and registry in step,
conda spec in step with pyproject, one rule file per stage."""

import tomllib
from pathlib import Path

import yaml

from wattpeft.methods import METHODS, get_method

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("assets", "data", "devices", "train", "harden", "profile", "evaluate", "continual", "report")


def test_one_rule_file_per_stage_plus_common():
    rules = {p.stem for p in (ROOT / "workflow/rules").glob("*.smk")}
    assert rules == set(STAGES) | {"common"}


def test_conda_env_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/wattpeft.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert [d for d in pip if not d.startswith("-e")] == deps
    assert "python=3.11" in env["dependencies"]


def test_a_new_method_needs_no_schema_edit():
    """One folder plus one registry line: the schema names no method, the registry does."""
    schema = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    assert not any(name in schema for name in METHODS)
    for name in METHODS:
        assert get_method(name).name == name


def test_every_script_runs_inside_logged_so_every_job_leaves_a_record():
    for script in (ROOT / "scripts").glob("*.py"):
        assert "with logged(snakemake):" in script.read_text(), script.name


def test_scripts_are_thin_entry_points():
    for script in (ROOT / "scripts").glob("*.py"):
        code = [l for l in script.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
        assert len(code) <= 20, f"{script.name} holds logic: move it into src/wattpeft/stages"
        assert "from wattpeft.stages" in script.read_text()


def test_torch_pinned_for_the_cpu_build():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
