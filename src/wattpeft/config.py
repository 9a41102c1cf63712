"""The experiment config: validation, the run matrix, and each run's resolved config.

Kept free of torch imports: Snakemake calls this while parsing the workflow, and a bad
config must fail in well under a second, naming the field, before any job starts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from .methods import method_names
from .utils.io import stable_hash

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

DEFAULTS: dict[str, Any] = {
    "methods": {},
    "training": {
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 5.0e-4,
        "weight_decay": 0.0,
        "warmup_ratio": 0.06,
        "gradient_accumulation_steps": 1,
        "max_grad_norm": 1.0,
        "mixed_precision": "auto",
        "checkpoint_every": 50,
        "log_every": 10,
    },
    # The search trains with a seed of its own, so no final run replays the best trial.
    "optuna": {"n_trials": 0, "search_space": {}, "seed": 1000},
    # 100 timed passes: the fewest for which a p99 is more than the sample maximum.
    "evaluation": {"latency_samples": 100, "max_new_tokens": 40, "batch_size": 32, "latency_workload": "auto",
                   "energy_long_tokens": 0},
    "profiling": {
        "device": "auto",
        "warmup_iters": 3,
        "window_iters": 10,
        "min_window_s": 1.0,
        "min_counter_updates": 10,
        "max_window_s": 60.0,
        "repeats": 3,
        "idle_seconds": 1.0,
        "energy_estimate": False,
        "batch_size": 8,
        # CPU threads of the measured passes (latency, energy, the energy table), whatever
        # cores the job holds: numbers compare only at equal threads.
        "measure_threads": 1,
    },
    "report": {},
    "wandb": {"mode": "disabled", "project": "wattpeft"},
}

# Keys of an optuna search space that tune the trainer; every other key tunes the method.
TRAINING_KEYS = set(DEFAULTS["training"]) | {"max_steps"}
TRIAL_MAX_BATCHES = 2
RUN_ID_SEP = "--"

# What each stage reads of a resolved run config: its cache key holds exactly this, so
# changing evaluation or logging settings retrains nothing (see `config_view`).
TRAIN_KEYS = ("run_id", "group_id", "family", "method", "method_params", "budget", "seed", "mode",
              "model", "dataset", "training")
VIEWS = {
    "train": TRAIN_KEYS,
    "search": TRAIN_KEYS + ("optuna", "primary_metric"),
    "evaluate": ("run_id", "role", "evaluation"),
    "log": ("run_id", "group_id", "wandb"),
}


def canonical(obj: Any) -> Any:
    """`obj` with every mapping's keys sorted, recursively. Snakemake compares params by their
    representation, so without this a mere reordering of config.yaml would rerun every job."""
    if isinstance(obj, dict):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(item) for item in obj]
    return obj


class ConfigError(ValueError):
    """A config problem, with the path of the offending field in the message."""


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from err
    return validate_config(raw, source=str(path))


def validate_config(raw: Any, source: str = "config", base_dir: str | Path | None = None) -> dict[str, Any]:
    """Schema check, then every check that would otherwise fail inside a job (see
    `checks.py`); returns the config with defaults filled in. Relative paths of local
    files are checked against `base_dir` (default: the working directory)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(raw), key=lambda e: list(e.path)
    )
    if errors:
        lines = [f"  {_field(e)}: {e.message}" for e in errors[:10]]
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines))
    cfg = with_defaults(raw)
    check_references(cfg, source)
    from .checks import check_semantics

    check_semantics(cfg, source, Path(base_dir) if base_dir is not None else Path.cwd())
    return cfg


def _field(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = ", ".join(sorted(str(k) for k in error.instance if k not in known))
        return f"{path + '.' if path else ''}{unknown} (unknown key)"
    return path or "(top level)"


def with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(raw)
    for key, default in DEFAULTS.items():
        merged = copy.deepcopy(default)
        merged.update(cfg.get(key) or {})
        cfg[key] = merged
    return cfg


def check_references(cfg: dict[str, Any], source: str = "config") -> None:
    known = set(method_names())
    for method in cfg["methods"]:
        if method not in known:
            raise ConfigError(f"{source}: methods.{method}: unknown method; known: {sorted(known)}")
    for fam_name, fam in cfg["families"].items():
        where = f"{source}: families.{fam_name}"
        if fam["model"] not in cfg["models"]:
            raise ConfigError(
                f"{where}.model: unknown model {fam['model']!r}; defined: {sorted(cfg['models'])}"
            )
        for field, name in family_dataset_fields(fam):
            if name not in cfg["datasets"]:
                raise ConfigError(f"{where}.{field}: unknown dataset {name!r}; defined: {sorted(cfg['datasets'])}")
        for method in fam["methods"]:
            if method not in known:
                raise ConfigError(f"{where}.methods.{method}: unknown method; known: {sorted(known)}")
    headline = cfg["report"].get("headline_family")
    if headline is not None and headline not in cfg["families"]:
        raise ConfigError(
            f"{source}: report.headline_family: unknown family {headline!r}; "
            f"defined: {sorted(cfg['families'])}"
        )


def family_datasets(fam: dict[str, Any]) -> list[str]:
    """The datasets a family trains on: its one dataset, or its stream's tasks in order."""
    return list(fam["stream"]["tasks"]) if "stream" in fam else [fam["dataset"]]


def family_dataset_fields(fam: dict[str, Any]) -> list[tuple[str, str]]:
    """(config field, dataset name) of each dataset a family names, for error messages."""
    if "stream" in fam:
        return [(f"stream.tasks[{i}]", name) for i, name in enumerate(fam["stream"]["tasks"])]
    return [("dataset", fam["dataset"])]


def dataset_view(cfg: dict[str, Any], fam: dict[str, Any]) -> dict[str, Any]:
    """A run's `dataset`: the family's dataset spec, or a stream's task specs in order."""
    if "stream" in fam:
        tasks = [{"name": name, **cfg["datasets"][name]} for name in fam["stream"]["tasks"]]
        return {"name": "stream", "tasks": tasks, **{k: v for k, v in fam["stream"].items() if k != "tasks"}}
    return {"name": fam["dataset"], **cfg["datasets"][fam["dataset"]]}


def model_view(cfg: dict[str, Any], fam: dict[str, Any]) -> dict[str, Any]:
    """A run's `model`: the model spec, plus the backbone precision when the family sets one
    (absent for the fp32 default, so existing runs keep their config hashes)."""
    model = {"name": fam["model"], **cfg["models"][fam["model"]]}
    if fam.get("backbone_precision", "fp32") != "fp32":
        model["precision"] = fam["backbone_precision"]
    return model


@dataclass(frozen=True)
class RunKey:
    family: str
    method: str
    budget: float
    seed: int

    @property
    def group_id(self) -> str:
        return RUN_ID_SEP.join([self.family, self.method, f"b{self.budget:g}"])

    @property
    def run_id(self) -> str:
        return f"{self.group_id}{RUN_ID_SEP}s{self.seed}"


def parse_run_id(run_id: str) -> RunKey:
    parts = run_id.split(RUN_ID_SEP)
    if len(parts) != 4 or not parts[2].startswith("b") or not parts[3].startswith("s"):
        raise ConfigError(f"malformed run id {run_id!r}; expected family--method--b<budget>--s<seed>")
    return RunKey(parts[0], parts[1], float(parts[2][1:]), int(parts[3][1:]))


def iter_runs(cfg: dict[str, Any], family: str | None = None) -> Iterator[RunKey]:
    for fam_name, fam in cfg["families"].items():
        if family is not None and fam_name != family:
            continue
        for method in fam["methods"]:
            for budget in fam["budgets"]:
                for seed in fam["seeds"]:
                    yield RunKey(fam_name, method, float(budget), int(seed))


def group_ids(cfg: dict[str, Any]) -> list[str]:
    return sorted({key.group_id for key in iter_runs(cfg)})


def resolve_run_config(cfg: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Everything one run needs, merged global <- family <- method, with `mode` applied.

    `config_hash` covers what training reads (VIEWS["train"]) and nothing else.
    """
    key = parse_run_id(run_id)
    if key.family not in cfg["families"]:
        raise ConfigError(f"run {run_id}: unknown family {key.family!r}")
    fam = cfg["families"][key.family]
    if key.method not in fam["methods"]:
        raise ConfigError(f"run {run_id}: method {key.method!r} is not in family {key.family!r}")
    method_entry = fam["methods"][key.method]
    training = {**cfg["training"], **fam.get("training", {}), **method_entry.get("training", {})}
    optuna = {**cfg["optuna"], **fam.get("optuna", {}), **method_entry.get("optuna", {})}
    wandb = dict(cfg["wandb"])
    if cfg["mode"] == "trial":
        training.update(epochs=1, max_batches_per_epoch=TRIAL_MAX_BATCHES)
        optuna["n_trials"] = 0
        wandb["mode"] = "disabled"
    resolved = {
        "run_id": run_id,
        "group_id": key.group_id,
        "family": key.family,
        "method": key.method,
        "role": method_entry["role"],
        "method_params": method_params(cfg, key.family, key.method),
        "budget": key.budget,
        "seed": key.seed,
        "mode": cfg["mode"],
        "model": model_view(cfg, fam),
        "dataset": dataset_view(cfg, fam),
        "primary_metric": fam["primary_metric"],
        "training": training,
        "optuna": optuna,
        "evaluation": {**cfg["evaluation"], **fam.get("evaluation", {})},
        "wandb": wandb,
    }
    resolved["config_hash"] = stable_hash({k: resolved[k] for k in TRAIN_KEYS})
    return canonical(resolved)


# Keys of a family's method entry that are not method parameters.
METHOD_ENTRY_KEYS = ("role", "optuna", "training")


def method_params(cfg: dict[str, Any], family: str, method: str) -> dict[str, Any]:
    """A method's parameters in a family: the global defaults, then the family's entry."""
    entry = cfg["families"][family]["methods"][method]
    params = dict(cfg["methods"].get(method, {}))
    params.update({k: v for k, v in entry.items() if k not in METHOD_ENTRY_KEYS})
    return params


def config_view(run_cfg: dict[str, Any], view: str) -> dict[str, Any]:
    """The part of a resolved run config that one stage reads (VIEWS), plus its config_hash."""
    return canonical({k: run_cfg[k] for k in VIEWS[view]} | {"config_hash": run_cfg["config_hash"]})


def apply_params(run_cfg: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of `run_cfg` with tuned parameters applied to training or to the method."""
    out = copy.deepcopy(run_cfg)
    for name, value in params.items():
        target = out["training"] if name in TRAINING_KEYS else out["method_params"]
        target[name] = value
    out["tuned_params"] = dict(params)
    out["config_hash"] = stable_hash({k: out[k] for k in (*TRAIN_KEYS, "tuned_params")})
    return out
