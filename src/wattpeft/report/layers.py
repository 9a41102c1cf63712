"""Per-module data of a family by layer index and module type, for the `importance` and
`delta_norm` figures, and per-layer gate utilisation for `gate_utilisation` (no matplotlib here).

Each run's record in the aggregated object carries `per_module` from its metrics.json:
{"delta_norm": {module: ‖ΔW_m‖_F}, "importance": {module: I_m}} (importance only for methods
that report it). Module names are the base model's, e.g.
`bert.encoder.layer.3.attention.self.query` or `model.layers.0.self_attn.q_proj`: the part
after `layer.<i>.` / `layers.<i>.` is the module type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from wattpeft.report.stats import is_number, seed_stats

LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.(.+)$")


def split_module_name(name: str) -> tuple[int | None, str]:
    """(layer index, module type): `bert.encoder.layer.3.attention.self.query` gives
    (3, 'attention.self.query'); a module outside numbered layers gives (None, name)."""
    match = LAYER_INDEX.search(name)
    if match is None:
        return None, name
    return int(match.group(1)), match.group(2)


def run_module_values(run: dict, key: str) -> dict[str, float]:
    """One run's per-module values under `key` ('delta_norm', 'importance'); {} when absent."""
    values = (run.get("per_module") or {}).get(key) or {}
    return {name: float(value) for name, value in values.items() if is_number(value)}


def reporting_groups(family_obj: dict, key: str) -> list[str]:
    """Groups (configured order) with at least one run reporting per-module `key`."""
    return [
        gid for gid, prov in family_obj["groups"].items()
        if any(run_module_values(family_obj["runs"][rid], key) for rid in prov["run_ids"])
    ]


def group_module_stats(family_obj: dict, group_id: str, key: str, absent: float | None = None) -> dict[str, dict]:
    """{module: seed statistics (mean, se, n, ...)} over the group's runs that report `key`.

    A module that one reporting run lacks but another has counts as `absent` in the first:
    0.0 for ‖ΔW‖_F (the export card leaves unchanged layers out), None (left out of the
    statistics) for values a run simply did not report. Runs reporting nothing are left out."""
    prov = family_obj["groups"][group_id]
    reporting = []
    for seed, run_id in zip(prov["seeds"], prov["run_ids"]):
        values = run_module_values(family_obj["runs"][run_id], key)
        if values:
            reporting.append((seed, values))
    modules = list(dict.fromkeys(name for _, values in reporting for name in values))
    seeds = [seed for seed, _ in reporting]
    return {name: seed_stats([values.get(name, absent) for _, values in reporting], seeds) for name in modules}


@dataclass(frozen=True)
class LayerGrid:
    """The layer x module-type grid that a set of module names spans."""

    n_layers: int  # rows 0 .. n_layers - 1
    types: list[str]  # module types, in first-seen order
    outside: list[str]  # modules with no layer index (classifier, lm_head, ...): not on the grid

    def cells(self, module_stats: dict[str, dict]) -> dict[tuple[int, str], dict]:
        """{(layer, type): stats} for the modules of `module_stats` that lie on the grid."""
        cells = {}
        for name, stats in module_stats.items():
            layer, kind = split_module_name(name)
            if layer is not None:
                cells[(layer, kind)] = stats
        return cells


def layer_grid(names: Iterable[str]) -> LayerGrid:
    layers, types, outside = [], [], []
    for name in names:
        layer, kind = split_module_name(name)
        if layer is None:
            outside.append(name)
            continue
        layers.append(layer)
        if kind not in types:
            types.append(kind)
    return LayerGrid(max(layers) + 1 if layers else 0, types, sorted(set(outside)))


def family_module_stats(family_obj: dict, key: str, absent: float | None = None) -> tuple[dict[str, dict], LayerGrid]:
    """({group_id: {module: stats}} for the groups reporting `key`, the grid they span)."""
    stats = {gid: group_module_stats(family_obj, gid, key, absent) for gid in reporting_groups(family_obj, key)}
    return stats, layer_grid(name for per_group in stats.values() for name in per_group)


# ---------------------------------------------------------------- gate utilisation

GATE_STATES = ("off", "int8", "fp16")  # display order; a method may use a subset (TABS: off, fp16)


def _ordered_states(states: Iterable[str]) -> list[str]:
    states = list(dict.fromkeys(states))
    return [s for s in GATE_STATES if s in states] + [s for s in states if s not in GATE_STATES]


def group_gate_utilisation(runs: list[dict]) -> dict | None:
    """Mean over a group's runs of `per_layer.gate_utilisation` ({state: [share of (token,
    direction) pairs in that state, per layer]}, the hardened gates on the test prompts);
    None when no run has gates (LoRA). Every reporting run must span the same layers.

    Returns {"states", "n_layers", "n", "seeds", "run_ids", "mean": {state: [per layer]}};
    a state a run lacks counts as 0 there (it never chose it)."""
    reporting = [(run, (run.get("per_layer") or {}).get("gate_utilisation")) for run in runs]
    reporting = [(run, table) for run, table in reporting if isinstance(table, dict) and table]
    if not reporting:
        return None
    for run, table in reporting:
        for state, values in table.items():
            if not isinstance(values, list) or not all(is_number(v) for v in values):
                raise ValueError(f"{run['run_id']}: per_layer.gate_utilisation.{state} is not a list of numbers")
    states = _ordered_states(state for _, table in reporting for state in table)
    lengths = {len(values) for _, table in reporting for values in table.values()}
    if len(lengths) != 1:
        layout = {run["run_id"]: {state: len(values) for state, values in table.items()} for run, table in reporting}
        raise ValueError(f"per_layer.gate_utilisation spans different numbers of layers: {layout}")
    (n_layers,) = lengths
    per_state: dict[str, list[list[float]]] = {state: [] for state in states}
    for run, table in reporting:
        for state in states:
            per_state[state].append([float(v) for v in table.get(state, [0.0] * n_layers)])
    return {
        "states": states,
        "n_layers": n_layers,
        "n": len(reporting),
        "seeds": [run["seed"] for run, _ in reporting],
        "run_ids": [run["run_id"] for run, _ in reporting],
        "mean": {state: [sum(column) / len(column) for column in zip(*rows)] for state, rows in per_state.items()},
    }
