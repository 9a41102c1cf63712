# Helpers shared by all rules: the validated config, the run matrix, paths and code versions.
import hashlib
from pathlib import Path

from wattpeft.config import (
    canonical,
    group_ids,
    iter_runs,
    parse_run_id,
    resolve_run_config,
    validate_config,
)
from wattpeft.energy.device import device_slug

# Snakemake's own validate() prints the whole schema and only the first error; wattpeft's
# validator checks the same schema (workflow/schemas/config.schema.yaml), names every bad
# field, checks cross-references (a family's model and dataset exist) and fills defaults.
CFG = validate_config(config, source="config")
PKG = Path(workflow.basedir) / "src" / "wattpeft"
DEVICE = device_slug(CFG["profiling"]["device"])


wildcard_constraints:
    run=r"[a-z][a-z0-9_]*--[a-z0-9_]+--b[0-9.]+--s[0-9]+",
    group=r"[a-z][a-z0-9_]*--[a-z0-9_]+--b[0-9.]+",
    family=r"[a-z][a-z0-9_]*",
    model=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",


def code_version(*parts):
    """Hash of the library files a stage runs: editing them reruns that stage (a param)."""
    digest = hashlib.sha256()
    for part in parts:
        path = PKG / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            digest.update(f.relative_to(PKG).as_posix().encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def method_code(method):
    return code_version(
        "methods/base.py", "methods/peft_backed.py", f"methods/{method}"
    )


def group_method_code(wildcards):
    return method_code(wildcards.group.split("--")[1])


def run_method_code(wildcards):
    return method_code(parse_run_id(wildcards.run).method)


# Every params value goes through canonical(): reordering config.yaml must rerun nothing.
def model_spec(wildcards):
    return canonical(CFG["models"][wildcards.model])


def dataset_spec(wildcards):
    return canonical(CFG["datasets"][wildcards.dataset])


# ---- the run matrix -------------------------------------------------------------------
def runs_of(family=None):
    return [key.run_id for key in iter_runs(CFG, family)]


def family_of_run(wildcards):
    return parse_run_id(wildcards.run).family


def run_config(wildcards):
    return resolve_run_config(CFG, wildcards.run)


def search_config(wildcards):
    """The group's search runs with its family's first seed."""
    family = wildcards.group.split("--")[0]
    seed = CFG["families"][family]["seeds"][0]
    return resolve_run_config(CFG, f"{wildcards.group}--s{seed}")


def best_params_of_run(wildcards):
    return f"results/search/{parse_run_id(wildcards.run).group_id}/best_params.json"


# ---- paths ----------------------------------------------------------------------------
def model_dir(name):
    return f"resources/models/{name}"


def data_dir(dataset, model):
    return f"results/data/{dataset}/{model}"


def family_inputs(family):
    fam = CFG["families"][family]
    return {
        "data": data_dir(fam["dataset"], fam["model"]),
        "model": model_dir(fam["model"]),
    }


def run_inputs(wildcards):
    return family_inputs(parse_run_id(wildcards.run).family)


def group_inputs(wildcards):
    return family_inputs(wildcards.group.split("--")[0])


def dataset_inputs(wildcards):
    """Raw inputs of a dataset: its asset folder, or its local file (a content change reruns)."""
    spec = CFG["datasets"][wildcards.dataset]
    if spec["source"] == "asset":
        return {"raw": f"resources/datasets/{spec['asset']}"}
    if spec["source"] == "local":
        return {"raw": spec["path"]}
    return {}


def metrics_of_family(wildcards):
    return [f"results/runs/{run}/metrics.json" for run in runs_of(wildcards.family)]


def family_config(wildcards):
    return canonical(CFG["families"][wildcards.family])


def figure_kinds():
    from wattpeft.report.figures import FIGURES

    return sorted(FIGURES)


def family_targets(family):
    return (
        [f"results/comparison/{family}/aggregated_metrics.json"]
        + [f"results/comparison/{family}/{kind}.png" for kind in figure_kinds()]
        + [f"results/runs/{run}/learning_curve.png" for run in runs_of(family)]
    )


def all_targets():
    targets = ["results/comparison/aggregated_metrics.json"]
    for family in CFG["families"]:
        targets += family_targets(family)
    return targets
