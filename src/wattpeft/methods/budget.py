"""The budget rule: one rule for every method, so that methods compare at equal size.

A budget of p% means adapter parameters = p% of the backbone's parameter count (counted
before attaching), B = p/100 x backbone. One rank on target module i costs c_i
parameters (in_i + out_i for LoRA's A row and B column; a method adds what else one rank
carries, e.g. AdaLoRA's singular value: + 1). With r* = B / sum(c_i):

* r* < 1: refused. Not even rank 1 fits; the error states the smallest budget that does.
* otherwise every module gets r = floor(r*); then, in a fixed order that interleaves the
  layers (the first target of every layer, then the second, ...; modules outside the
  layer stack last), each module gets +1 if that brings the total closer to B. Ranks
  are therefore in {r, r + 1}, spread over depth rather than piled on the first layers.
* if the achieved total still differs from B by more than `tolerance_pct` percent
  (relative), refused: ranks this coarse cannot express the budget.

A fixed rank bypasses the rule (every module gets it) and reports what it achieves.
Torch-free: targets are plain (name, in_features, out_features) records.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence


class BudgetError(ValueError):
    """The budget cannot be met on these targets (too small, or too coarse for the tolerance)."""


@dataclass(frozen=True)
class Target:
    """One targeted linear layer."""

    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Allocation:
    """Per-module ranks chosen by the rule, and what they cost."""

    ranks: dict[str, int]  # module name -> rank, in model order
    costs: dict[str, int]  # module name -> parameters one rank costs there
    backbone_params: int
    budget_pct: float  # nominal
    rule: str  # "budget" (the rule above) or "fixed" (config `rank`)

    @property
    def params(self) -> int:
        return sum(r * self.costs[name] for name, r in self.ranks.items())

    @property
    def total_rank(self) -> int:
        return sum(self.ranks.values())

    @property
    def mean_rank(self) -> float:
        return self.total_rank / len(self.ranks)

    @property
    def achieved_pct(self) -> float:
        return 100.0 * self.params / self.backbone_params

    def params_for(self, ranks: dict[str, int]) -> int:
        """What other per-module ranks (e.g. those left after pruning) cost on these targets."""
        return sum(r * self.costs[name] for name, r in ranks.items())


_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def spread_order(names: Sequence[str]) -> list[str]:
    """`names` interleaved by layer: slot 0 of every layer, then slot 1, ...; the layer is
    the first numeric path component, modules without one (e.g. a pooler) come last."""
    layer_of: dict[str, float] = {}
    slot_of: dict[str, int] = {}
    used: dict[float, int] = defaultdict(int)
    for name in names:
        match = _LAYER_INDEX.search(f".{name}.")
        layer = int(match.group(1)) if match else math.inf
        layer_of[name], slot_of[name] = layer, used[layer]
        used[layer] += 1
    return sorted(names, key=lambda n: (slot_of[n], layer_of[n]))


def allocate(
    targets: Sequence[Target],
    backbone_params: int,
    budget_pct: float,
    *,
    extra_per_rank: int = 0,
    tolerance_pct: float = 10.0,
    fixed_rank: int | None = None,
) -> Allocation:
    """Per-module ranks for `budget_pct`% of `backbone_params` (see the module docstring)."""
    if not targets:
        raise BudgetError("no target module to allocate ranks to")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise BudgetError("target module names must be unique")
    costs = {t.name: t.in_features + t.out_features + extra_per_rank for t in targets}
    made = lambda ranks, rule: Allocation(ranks, costs, backbone_params, float(budget_pct), rule)  # noqa: E731
    if fixed_rank is not None:
        return made({n: int(fixed_rank) for n in names}, "fixed")

    budget = budget_pct / 100.0 * backbone_params
    per_rank = sum(costs.values())
    if budget < per_rank:
        raise BudgetError(_too_small(budget_pct, budget, per_rank, len(names), backbone_params))
    base = int(budget // per_rank)
    ranks = {n: base for n in names}
    left = budget - base * per_rank
    for name in spread_order(names):
        if abs(left - costs[name]) < abs(left):  # +1 here lands closer to the budget
            ranks[name] += 1
            left -= costs[name]
    allocation = made(ranks, "budget")
    gap_pct = 100.0 * abs(allocation.params - budget) / budget
    if gap_pct > tolerance_pct:
        raise BudgetError(
            f"the budget rule reaches {allocation.achieved_pct:.4g}% of the backbone for a nominal "
            f"{budget_pct:g}% ({gap_pct:.1f}% off; budget_tolerance_pct is {tolerance_pct:g}): ranks "
            f"on these {len(names)} target modules come in steps too coarse for this budget. Raise the "
            "budget, target more modules, or raise budget_tolerance_pct"
        )
    return allocation


def _too_small(budget_pct: float, budget: float, per_rank: int, n: int, backbone: int) -> str:
    smallest = math.ceil(100.0 * per_rank / backbone * 1e4) / 1e4  # rounded up: it still works
    return (
        f"budget {budget_pct:g}% ({budget:.0f} of {backbone} backbone parameters) is too small for "
        f"rank 1 on the {n} target modules, which costs {per_rank} parameters; the smallest budget "
        f"that works here is {smallest:g}%. Raise the budget or set fewer target_modules"
    )


def allocation_stats(allocation: Allocation) -> dict[str, Any]:
    """The rule's choice, as reported in every method's stats."""
    ranks = allocation.ranks.values()
    return {
        "budget_pct": allocation.budget_pct,
        "backbone_params": allocation.backbone_params,
        "rank_rule": allocation.rule,
        "rank": allocation.mean_rank,
        "rank_min": min(ranks),
        "rank_max": max(ranks),
        "total_rank": allocation.total_rank,
        "n_target_modules": len(allocation.ranks),
        "planned_adapter_params": allocation.params,
    }


__all__ = ["Allocation", "BudgetError", "Target", "allocate", "allocation_stats", "spread_order"]
