# Helpers shared by all rules: the validated config, the run matrix, paths and code versions.
# Parsing imports no torch: a no-op dry run must stay fast (bench/dry_run_time.py).
import functools
from types import SimpleNamespace
from pathlib import Path

from wattpeft import codehash
from wattpeft.config import (
    canonical,
    config_view,
    family_datasets,
    iter_runs,
    parse_run_id,
    resolve_run_config,
    validate_config,
)
from wattpeft.methods import METHODS
from wattpeft.needs import need_path
from wattpeft.report.kinds import FIGURE_KINDS

# Snakemake's own validate() prints the whole schema and only the first error; wattpeft's
# validator checks the same schema (workflow/schemas/config.schema.yaml), names every bad
# field, and checks what would otherwise fail inside a job (wattpeft/checks.py).
CFG = validate_config(config, source="config")
SCRIPTS = Path(workflow.basedir) / "scripts"
# The profiling device's name as configured ("auto" or a name the user chose). "auto" is
# resolved by each profiling job on the machine that runs it, and the profile records the
# device it found: a login node without a GPU never names a GPU node's profile.
PROFILE_DEVICE = CFG["profiling"]["device"]
# The device's joules per FLOP of int8 and 16-bit GEMMs (rule energy_table).
ENERGY_TABLE = need_path("energy_table", "", PROFILE_DEVICE)
# Families that `snakemake` with no target runs (and the top-level comparison covers); a
# family with in_default_run: false is one target away (its aggregated_metrics.json).
DEFAULT_FAMILIES = [name for name, fam in CFG["families"].items() if fam.get("in_default_run", True)]
# A measuring job (latency, energy) holds every core Snakemake may use on this host, so no
# other job runs beside it; its passes still use profiling.measure_threads. Stated in the rules, not
# in profiles/default: a workflow profile would override a cluster profile key by key
# (a cluster profile's set-threads overrides this).
# (Read without workflow.cores, which raises where no --cores is given: --unlock, --report.)
WHOLE_HOST = workflow.global_resources["_cores"].value or 1
MEASURE_THREADS = CFG["profiling"]["measure_threads"]


# Runs of stream families (a `stream` of tasks, rules/continual.smk) and runs of one-dataset
# families (train/harden/profile/evaluate.smk) write the same files by different rules: each
# of those rules matches only its own kind of run.
STREAM_FAMILIES = [name for name, fam in CFG["families"].items() if "stream" in fam]
_RUN_TAIL = r"--[a-z0-9_]+--b[0-9.]+--s[0-9]+"
_STREAM_HEAD = f"(?:{'|'.join(STREAM_FAMILIES)})" if STREAM_FAMILIES else "(?!)"  # (?!): matches nothing
_NOT_STREAM = "".join(f"(?!{name}--)" for name in STREAM_FAMILIES)
STREAM_RUN = f"{_STREAM_HEAD}{_RUN_TAIL}"
ONE_DATASET_RUN = f"{_NOT_STREAM}[a-z][a-z0-9_]*{_RUN_TAIL}"


wildcard_constraints:
    run=r"[a-z][a-z0-9_]*--[a-z0-9_]+--b[0-9.]+--s[0-9]+",
    group=r"[a-z][a-z0-9_]*--[a-z0-9_]+--b[0-9.]+",
    family=r"[a-z][a-z0-9_]*",
    device=r"[a-z0-9][a-z0-9._-]*",
    hw=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    model=r"[A-Za-z0-9_.-]+",
    dataset=r"[A-Za-z0-9_.-]+",


def code_version(script, *data_files):
    """Hash of every wattpeft module that scripts/<script>.py imports (found from its
    imports, see wattpeft/codehash.py) plus data files it reads: editing them reruns it."""
    return codehash.code_version(SCRIPTS / f"{script}.py", *data_files)


@functools.cache  # once per method per parse: every job of the method asks for it
def method_code(method):
    return codehash.module_version(f"{METHODS[method].package}.model")


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


def run_view(view):
    """A params function: the part of the run's config that one stage reads (config.VIEWS)."""

    def params(wildcards):
        return config_view(resolve_run_config(CFG, wildcards.run), view)

    return params


def search_config(wildcards):
    """The group's search config; trials train with the search's own seed (optuna.seed)."""
    family = wildcards.group.split("--")[0]
    seed = CFG["families"][family]["seeds"][0]
    return config_view(resolve_run_config(CFG, f"{wildcards.group}--s{seed}"), "search")


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


def stream_inputs(wildcards):
    """A stream run's inputs: every task's tokenised data, in stream order, and the backbone."""
    fam = CFG["families"][parse_run_id(wildcards.run).family]
    return {"data": [data_dir(name, fam["model"]) for name in family_datasets(fam)], "model": model_dir(fam["model"])}


def run_inputs(wildcards):
    return family_inputs(parse_run_id(wildcards.run).family)


def group_inputs(wildcards):
    return family_inputs(wildcards.group.split("--")[0])


def needs_of(run_id):
    """What the run's method asks of other jobs in its registry entry (methods/__init__.py):
    `after_<m>`, the train summary of method m's run with the same family, budget and seed,
    and each family artefact it names (wattpeft/needs.py). The method receives them as its
    `inputs`."""
    family, method, *rest = run_id.split("--")
    entry = METHODS[method]
    needs = {f"after_{m}": f"results/runs/{'--'.join([family, m, *rest])}/train_summary.json" for m in entry.after}
    needs.update({name: need_path(name, family, PROFILE_DEVICE) for name in entry.needs})
    return needs


def run_needs(wildcards):
    return needs_of(wildcards.run)


def group_needs(wildcards):
    """A search's trials read what the group's first-seed run would."""
    family = wildcards.group.split("--")[0]
    return needs_of(f"{wildcards.group}--s{CFG['families'][family]['seeds'][0]}")


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


# Hardware-surrogate families: a family's `devices` and `surrogate` sections (the schema's
# $defs) name what devices.smk builds; any family with them gets it, none is special.
def family_model(wildcards):
    return model_dir(CFG["families"][wildcards.family]["model"])


def family_model_name(wildcards):
    return CFG["families"][wildcards.family]["model"]


def family_devices(wildcards):
    return canonical(CFG["families"][wildcards.family]["devices"])


def family_surrogate(wildcards):
    return canonical(CFG["families"][wildcards.family]["surrogate"])


def measure_settings(wildcards):
    """What the measuring job reads of a family's devices section (nothing else reruns it)."""
    devices = CFG["families"][wildcards.family]["devices"]
    return canonical({k: devices[k] for k in ("measure", "adapted_modules") if k in devices})


def measure_window(wildcards):
    """profiling's settings with the family's measure_window over them."""
    window = CFG["families"][wildcards.family]["devices"].get("measure_window", {})
    return canonical({**CFG["profiling"], **window})


def imported_csv(wildcards):
    return CFG["families"][wildcards.family]["devices"]["import"][wildcards.hw]


def device_table_parts(wildcards):
    """The family's device rows: each simulated and imported device, and this machine's."""
    devices = CFG["families"][wildcards.family]["devices"]
    where = f"results/devices/{wildcards.family}"
    parts = [f"{where}/simulated/{hw}.parquet" for hw in devices.get("simulate", [])]
    parts += [f"{where}/imported/{hw}.parquet" for hw in devices.get("import", {})]
    if devices.get("measure"):
        parts.append(f"{where}/measured/{PROFILE_DEVICE}.parquet")
    return parts


def _run_family(wildcards):
    return SimpleNamespace(family=wildcards.run.split("--")[0])


def run_family_devices(wildcards):
    return family_devices(_run_family(wildcards))


def run_family_surrogate(wildcards):
    return family_surrogate(_run_family(wildcards))


def run_family_model_name(wildcards):
    return family_model_name(_run_family(wildcards))


def run_surrogate_evaluation(wildcards):
    return f"results/surrogate/{_run_family(wildcards).family}/evaluation.parquet"


def run_extras(wildcards):
    """What a run's evaluation reads beside its export: its cost on the family's unseen device."""
    family = wildcards.run.split("--")[0]
    return {"device_cost": f"results/runs/{wildcards.run}/device_cost.json"} if "surrogate" in CFG["families"][family] else {}


def family_extras(wildcards):
    """What a family's aggregation reads beside its runs' metrics (its surrogate's evaluation)."""
    family = CFG["families"][wildcards.family]
    return {"surrogate_evaluation": f"results/surrogate/{wildcards.family}/evaluation.parquet"} if "surrogate" in family else {}


def family_config(wildcards):
    """What aggregation reads of a family: its claims are checked by rule claims alone, so
    editing a claim re-aggregates nothing."""
    family = CFG["families"][wildcards.family]
    return canonical({k: v for k, v in family.items() if k != "claims"})


def wandb_targets(family):
    """W&B mirrors, only when asked for (mode full and wandb.mode not disabled)."""
    if CFG["mode"] != "full" or CFG["wandb"]["mode"] == "disabled":
        return []
    return [f"results/runs/{run}/wandb_mirror.json" for run in runs_of(family)]


def family_targets(family):
    return (
        [f"results/comparison/{family}/aggregated_metrics.json"]
        + [f"results/comparison/{family}/{kind}.png" for kind in FIGURE_KINDS]
        + [f"results/runs/{run}/learning_curve.png" for run in runs_of(family)]
        + wandb_targets(family)
    )


def all_targets():
    targets = ["results/comparison/aggregated_metrics.json"]
    targets += [f"results/comparison/claims.{ext}" for ext in ("html", "json", "md")]
    for family in DEFAULT_FAMILIES:
        targets += family_targets(family)
    return targets
