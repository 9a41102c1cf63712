"""Config checks beyond the schema: every value that would otherwise fail inside a job.

The schema checks types and names; these check meaning: a method's parameters against
its typed config, search-space bounds, that local files exist, that named assets are in
the registry, that a family's primary metric is one its task produces, and so on. They
run while Snakemake parses (torch-free), so a mistake stops the workflow before any job
starts, naming the field. All problems are listed at once.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Iterator

ASSETS_REGISTRY = Path(__file__).with_name("assets_registry.json")


def check_semantics(cfg: dict[str, Any], source: str, base_dir: Path) -> None:
    from .config import ConfigError

    problems = [*_model_problems(cfg, base_dir), *_dataset_problems(cfg, base_dir)]
    problems += [*_family_problems(cfg), *_search_problems(cfg), *_other_problems(cfg)]
    problems += _hardware_problems(cfg, base_dir)
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ConfigError(f"{source} is invalid:\n{shown}{more}")


def _assets() -> dict[str, dict]:
    return json.loads(ASSETS_REGISTRY.read_text())


def _asset_problem(where: str, name: str, category: str) -> str | None:
    of_kind = sorted(k for k, v in _assets().items() if v["category"] == category)
    if name not in of_kind:
        return f"{where}.asset: unknown {category} asset {name!r}; registry has {of_kind}"
    return None


def _missing_path(where: str, path: str, base_dir: Path, what: str) -> str | None:
    full = Path(path) if Path(path).is_absolute() else base_dir / path
    if not full.exists():
        return f"{where}.path: {what} {path!r} does not exist (looked in {full})"
    return None


def _source_problem(where: str, spec: dict, base_dir: Path, category: str, local_what: str) -> str | None:
    """A named asset missing from the registry, or a local path that does not exist."""
    if spec["source"] == "asset":
        return _asset_problem(where, spec["asset"], category)
    if spec["source"] == "local":
        return _missing_path(where, spec["path"], base_dir, local_what)
    return None


def _model_problems(cfg: dict, base_dir: Path) -> Iterator[str]:
    for name, spec in cfg["models"].items():
        where = f"models.{name}"
        problem = _source_problem(where, spec, base_dir, "model", "model folder")
        if problem:
            yield problem
        if spec["source"] == "tiny" and spec.get("hidden_size", 32) % spec.get("num_heads", 2):
            yield f"{where}.num_heads: {spec.get('num_heads', 2)} does not divide hidden_size {spec.get('hidden_size', 32)}"


def _dataset_problems(cfg: dict, base_dir: Path) -> Iterator[str]:
    for name, spec in cfg["datasets"].items():
        where = f"datasets.{name}"
        problem = _source_problem(where, spec, base_dir, "dataset", "file")
        if problem:
            yield problem
        ratios = spec.get("split_ratios")
        if ratios and abs(sum(ratios) - 1.0) > 1e-6:
            yield f"{where}.split_ratios: {ratios} sum to {sum(ratios):g}, not 1"
        if "cast" in spec:
            from .data.hub import config_cast_problems

            yield from config_cast_problems(where, spec)


def dataset_task(spec: dict[str, Any]) -> str | None:
    """The task a dataset's rows have, known without reading them (None: unknown asset)."""
    if spec.get("cast"):
        return spec["cast"]
    if spec["source"] == "local":
        return spec["task"]
    if spec["source"] == "hub":
        from .data.hub import HUB_DATASETS

        return HUB_DATASETS[spec["hub"]].task
    return _assets().get(spec["asset"], {}).get("task")


def _family_problems(cfg: dict) -> Iterator[str]:
    from .config import method_params
    from .evaluation.outputs import STREAM, metrics_of_task
    from .methods import METHODS, method_config

    for fam_name, fam in cfg["families"].items():
        where = f"families.{fam_name}"
        task = STREAM if "stream" in fam else dataset_task(cfg["datasets"][fam["dataset"]])
        yield from _stream_problems(where, fam, cfg)
        primary = fam["primary_metric"]["name"]
        if task is not None and primary not in metrics_of_task(task):
            yield (f"{where}.primary_metric.name: {primary!r} is not produced by a {task} task; "
                   f"choose one of {list(metrics_of_task(task))}")
        for method in fam["methods"]:
            try:
                method_config(method).from_params(method_params(cfg, fam_name, method), where=f"{where}.methods.{method}")
            except ValueError as err:
                yield str(err)
            missing = [m for m in METHODS[method].after if m not in fam["methods"]] if method in METHODS else []
            if missing:
                yield (f"{where}.methods.{method}: trains after {', '.join(missing)}'s run of the same budget and "
                       f"seed (its registry entry, methods/__init__.py); add {', '.join(missing)} to the family's methods")
        yield from _claim_problems(where, fam, None if task is None else metrics_of_task(task))


def _stream_problems(where: str, fam: dict, cfg: dict) -> Iterator[str]:
    """A stream family trains continual methods (registry Entry.continual) on text-to-text
    tasks; a one-dataset family trains none of them (they need a stream's task calls)."""
    from .methods import METHODS

    in_stream = "stream" in fam
    for method in fam["methods"]:
        if method in METHODS and METHODS[method].continual != in_stream:
            yield (f"{where}.methods.{method}: " + ("not a continual method (registry Entry.continual): a stream "
                   "family trains only continual ones" if in_stream else "a continual method needs a family with a stream"))
    for method, entry in fam["methods"].items() if in_stream else ():
        trials = {**cfg["optuna"], **fam.get("optuna", {}), **entry.get("optuna", {})}["n_trials"]
        if trials and cfg["mode"] == "full":
            yield (f"{where}.methods.{method}: optuna.n_trials is {trials}; a stream is not searched (each trial "
                   "would train the whole stream): set optuna: {n_trials: 0} in the family")
    if not in_stream and cfg["datasets"][fam["dataset"]].get("cast"):
        yield (f"{where}.dataset: {fam['dataset']!r} is cast as text2text, which only a stream's tasks are "
               "(name it in a family's stream)")
    for i, name in enumerate(fam["stream"]["tasks"] if in_stream else []):
        if cfg["datasets"][name].get("cast") != "text2text":
            yield (f"{where}.stream.tasks[{i}]: dataset {name!r} needs cast: text2text (the decoder reads every "
                   "task of a stream as prompt -> target)")


# A method's need (registry Entry.needs) -> the family section that provides it.
NEED_SECTIONS = {"device_table": "devices", "surrogate": "surrogate"}
# Method parameters that restate the family's deployment (its surrogate section): one fact.
DEPLOYMENT_KEYS = {"seq_len": "seq_len", "param_bits": "param_bits", "target_device": "unseen_device"}


def _hardware_problems(cfg: dict, base_dir: Path) -> list[str]:
    """A family's `devices` and `surrogate` sections: known simulated devices, CSVs that
    exist, an unseen device the table will hold, valid meta-training settings, the sections
    its methods need, and methods that agree with its deployment setting."""
    from .devices.catalogue import SIMULATED_DEVICES
    from .surrogate.config import MetaTrainConfig

    problems = [*_needed_sections(cfg), *_deployment_disagreements(cfg)]
    for fam_name, fam in cfg["families"].items():
        where, devices = f"families.{fam_name}", fam.get("devices")
        if devices is None:
            if "surrogate" in fam:
                problems.append(f"{where}.surrogate: needs a devices section (the table it trains on)")
            continue
        unknown = [d for d in devices.get("simulate", []) if d not in SIMULATED_DEVICES]
        if unknown:
            problems.append(f"{where}.devices.simulate: unknown device(s) {unknown}; known: {sorted(SIMULATED_DEVICES)}")
        for name, path in devices.get("import", {}).items():
            problems.append(_missing_path(f"{where}.devices.import.{name}", path, base_dir, "CSV"))
        named = [*devices.get("simulate", []), *devices.get("import", {})]
        if devices.get("measure"):
            named.append(cfg["profiling"]["device"])
        if len(set(named)) < len(named):
            problems.append(f"{where}.devices: a device is named twice in {named}")
        surrogate = fam.get("surrogate")
        if surrogate is None:
            continue
        if surrogate["unseen_device"] not in named:
            problems.append(f"{where}.surrogate.unseen_device: {surrogate['unseen_device']!r} is not among the "
                            f"family's devices {named}")
        try:
            MetaTrainConfig.from_mapping(surrogate.get("training"), where=f"{where}.surrogate.training")
        except ValueError as err:
            problems.append(str(err))
    return [problem for problem in problems if problem]


def _needed_sections(cfg: dict) -> Iterator[str]:
    from .methods import METHODS

    for fam_name, fam in cfg["families"].items():
        for method in fam["methods"]:
            for need in METHODS[method].needs if method in METHODS else ():
                section = NEED_SECTIONS.get(need)
                if section and section not in fam:
                    yield (f"families.{fam_name}.methods.{method}: needs the family's {section} section "
                           f"(its registry entry asks for {need!r}; docs/devices.md)")


def _deployment_disagreements(cfg: dict) -> Iterator[str]:
    """Typed values (defaults included) of a method's deployment keys against the family's."""
    from .config import method_params
    from .methods import METHODS, method_config

    for fam_name, fam in cfg["families"].items():
        deployment = fam.get("surrogate")
        for method in fam["methods"] if deployment else ():
            try:
                typed = method_config(method).from_params(method_params(cfg, fam_name, method)) if method in METHODS else None
            except ValueError:
                continue  # reported by _family_problems
            for key, section_key in DEPLOYMENT_KEYS.items():
                value = getattr(typed, key, deployment[section_key])
                if value is not None and value != deployment[section_key]:
                    yield (f"families.{fam_name}.methods.{method}.{key}: {value!r} differs from the family's "
                           f"surrogate.{section_key} {deployment[section_key]!r}; both describe one deployment")


# Metrics a run's metrics.json holds beyond metrics_of_task, that a claim may name: the energy
# model's (evaluation/modelled_energy.py: modelled_*, priced by the energy table; E_max, its
# worst ratio and the long input for gated methods only, null or absent otherwise) and the
# method's parameter counts (stages/evaluate.py). A method without them gives 'not comparable'.
CLAIM_METRICS = (
    "modelled_j_per_sample", "modelled_adapter_j_per_sample", "modelled_adapter_j_max_sample",
    "modelled_adapter_j_long_sample", "modelled_tokens_per_sample", "adapter_flop_share",
    "adapter_flop_share_max", "e_max_j", "e_max_worst_ratio", "long_sample_tokens",
    "controller_params", "adapter_params", "effective_adapter_params",
    # Hardware-surrogate families (rule device_cost; report/aggregate.add_hypervolumes).
    "unseen_energy_j", "unseen_latency_ms", "unseen_peak_power_w", "on_device_measurements", "hypervolume_4d",
    *(f"surrogate_{score}_{target}" for score in ("mape", "within_10pct")
      for target in ("energy_j", "latency_ms", "peak_power_w")),
)  # fmt: skip
RATIO_COMPARISONS = ("ratio_at_most", "ratio_at_least")
LIMIT_COMPARISONS = ("at_most", "at_least")


def _claim_problems(where: str, fam: dict, known_metrics: tuple[str, ...] | None) -> Iterator[str]:
    """A claim names this family's methods and metrics its runs produce, and no field its
    comparison would ignore. A budget the family does not run is legal: the claim is then
    reported as not comparable here."""
    known = None if known_metrics is None else (*known_metrics, *CLAIM_METRICS)
    for i, claim in enumerate(fam.get("claims", [])):
        at = f"{where}.claims[{i}]"
        comparison = claim["comparison"]
        for key in ("method", "against"):
            if key in claim and claim[key] not in fam["methods"]:
                yield f"{at}.{key}: {claim[key]!r} is not a method of this family; choose one of {list(fam['methods'])}"
        if claim.get("against") == claim["method"] and claim.get("against_metric", claim["metric"]) == claim["metric"]:
            yield f"{at}.against: {claim['method']!r} is compared with itself"
        for key in ("metric", "against_metric"):
            if known is not None and key in claim and claim[key] not in known:
                yield f"{at}.{key}: {claim[key]!r} is not a metric of this task; choose one of {list(known)}"
        if comparison == "value" and claim["method"] not in claim.get("seed_values", {}):
            yield f"{at}.seed_values: a value claim needs the seed's value for {claim['method']!r}"
        if "against_metric" in claim and comparison not in RATIO_COMPARISONS:
            yield (f"{at}.against_metric: only a ratio ({', '.join(RATIO_COMPARISONS)}) divides by another "
                   f"metric; {comparison} would ignore it")
        if "limit" in claim and comparison not in LIMIT_COMPARISONS:
            yield f"{at}.limit: only at_most and at_least have a limit; {comparison} would ignore it"
        if comparison in LIMIT_COMPARISONS and "against" in claim:
            yield f"{at}.against: {comparison} bounds {claim['method']!r}'s own values; it compares with no other method"


def _search_spaces(cfg: dict) -> Iterator[tuple[str, dict, list[str]]]:
    """(where, optuna block, methods it tunes) for every optuna block of the config."""
    all_methods = sorted({m for fam in cfg["families"].values() for m in fam["methods"]})
    yield "optuna", cfg["optuna"], all_methods
    for fam_name, fam in cfg["families"].items():
        if "optuna" in fam:
            yield f"families.{fam_name}.optuna", fam["optuna"], list(fam["methods"])
        for method, entry in fam["methods"].items():
            if "optuna" in entry:
                yield f"families.{fam_name}.methods.{method}.optuna", entry["optuna"], [method]


def _search_problems(cfg: dict) -> Iterator[str]:
    from .config import TRAINING_KEYS
    from .methods import method_config

    for where, block, methods in _search_spaces(cfg):
        for name, spec in block.get("search_space", {}).items():
            at = f"{where}.search_space.{name}"
            untunable = [m for m in methods if name not in TRAINING_KEYS | method_config(m).field_names()]
            if untunable:
                yield f"{at}: {name!r} is neither a training key nor a parameter of method(s) {untunable}"
            yield from _bounds_problems(at, spec)
    seeds = {s for fam in cfg["families"].values() for s in fam["seeds"]}
    search_seed = cfg["optuna"]["seed"]
    if search_seed in seeds and cfg["mode"] == "full":
        yield f"optuna.seed: {search_seed} is also a final-run seed; the final run would replay a search trial"


def _bounds_problems(at: str, spec: dict) -> Iterator[str]:
    kind = spec["type"]
    if kind == "categorical":
        if "choices" not in spec:
            yield f"{at}.choices: a categorical search needs choices"
        return
    if "low" not in spec or "high" not in spec:
        yield f"{at}: a {kind} search needs low and high"
        return
    low, high = spec["low"], spec["high"]
    if not low < high:
        yield f"{at}: low ({low}) must be below high ({high})"
    if kind == "loguniform" and low <= 0:
        yield f"{at}.low: a loguniform search needs low > 0, got {low}"
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, spec.get("step", 1))):
        yield f"{at}: an int search needs integer low, high and step"


def _other_problems(cfg: dict) -> Iterator[str]:
    profiling = cfg["profiling"]
    if profiling["max_window_s"] < profiling["min_window_s"]:
        yield (f"profiling.max_window_s: {profiling['max_window_s']} is below min_window_s "
               f"{profiling['min_window_s']}")
    if profiling.get("tdp_watts") is not None and not profiling["energy_estimate"]:
        yield "profiling.tdp_watts: set, but energy_estimate is false (it would be ignored)"
    mode = cfg["wandb"]["mode"]
    if mode != "disabled" and cfg["mode"] == "full" and importlib.util.find_spec("wandb") is None:
        yield f"wandb.mode: {mode!r} needs wandb: pip install 'wattpeft[wandb]', or set mode: disabled"
