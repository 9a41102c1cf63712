"""Seed documents' research claims, declared as data and checked against this workflow's runs.

A family may declare `claims:` (workflow/schemas/config.schema.yaml). Each claim is filled
with our measurements (mean +- standard error over n seeds, from the family's
aggregated_metrics.json, at the group of that method and budget) and given a verdict:
`holds`, `does not hold`, `inconclusive at this n` or `not comparable here`, always with a
reason (a sentence).

Verdict rules (95% confidence intervals):

* matches: d = mean(method) - mean(against); its CI is d +- t * sqrt(se_m^2 + se_a^2),
  with t the 0.975 quantile of Student's t at the Welch-Satterthwaite degrees of freedom
  df = (se_m^2 + se_a^2)^2 / (se_m^4 / (n_m - 1) + se_a^4 / (n_a - 1)). It holds if the
  CI lies within [-tolerance, tolerance], does not hold if it lies entirely outside it
  (above or below), and is inconclusive otherwise.
* better: the same d and CI, oriented with the metric's direction (`metric_direction`:
  for a minimised metric such as train_time_s, d = mean(against) - mean(method)), so a
  positive d always means `method` is better. Holds if the CI is above 0, does not hold if
  it is below 0, inconclusive if it contains 0.
* ratio_at_most: R = mean(method) / mean(against), with the delta-method standard error
  se_R = R * sqrt((se_m / mean_m)^2 + (se_a / mean_a)^2) (computed in the equivalent form
  sqrt((se_m / mean_a)^2 + (mean_m * se_a / mean_a^2)^2), defined when mean_m = 0) and
  the same t quantile as the difference. Holds if the CI's upper end is <= ratio, does
  not hold if its lower end is > ratio, inconclusive otherwise.
* value: d = mean(method) - the seed's value for `method`; CI d +- t * se_m with
  df = n_m - 1; then as for matches.
* ratio_at_most may divide by another metric of `against`: `against_metric` (default:
  `metric`), e.g. one method's energy over another's cap. The CI is the same.

Bound claims are judged on every seed's value, not on an interval: they state what must
happen in each run (a cap that holds, an overshoot that appears), and one run that breaks
the bound breaks the claim.

* at_most: every seed's value of `metric` for `method` is at most `limit`. Holds if the
  largest is; does not hold if any seed exceeds it (the row reports the largest);
  inconclusive if none exceeds it but a seed has no value.
* at_least: the mirror image: every seed's value is at least `limit` (the row reports the
  smallest), e.g. a baseline that forgets at least 5 pp.
* ratio_at_least: per seed s, R_s = `metric` of `method` / `against_metric` (default:
  `metric`) of `against`, both from seed s. Holds if the smallest R_s is at least `ratio`;
  does not hold if some R_s is below it (the row reports the smallest); inconclusive if
  none is below but a seed of either group has no value or no partner.

Exact metrics (`exact: true`): a value fixed by the configuration, such as a parameter
count, for which n = 1 is as good as any n. Every seed of a compared group must give the
same value (otherwise: not comparable here, the metric is not exact), and the claim is
judged from these values: matches |d| <= tolerance, better d > 0 (oriented as above),
ratio_at_most R <= ratio, value |d| <= tolerance; at_most, at_least and ratio_at_least as above.

Modelled numbers: a claim on a metric priced by the energy table (modelled_*, e_max_*;
aggregate.is_modelled) is flagged `modelled` in its row, in the table's claim cell and in
its reason, with the table's source ('default': documented defaults; 'measured': this
device's): a modelled saving is not a measured one.

Before any of that:

* not comparable here: the method (or `against`) has no runs at the claim's budget in this
  family; the metric is absent or unavailable (null) in the runs; an energy metric whose
  energy source is `unavailable` (no energy counter on this machine); a `better` claim on a
  metric with no known direction; a ratio whose denominator mean (ratio_at_least: any
  seed's denominator) is 0; an `exact` metric whose seeds disagree; and, for `value`
  claims only, the family's model or dataset differs from the claim's `seed_setting`
  (names compared case-insensitively, ignoring punctuation).
* inconclusive at this n: for the interval rules (not exact, not bound claims), fewer than
  2 seeds with a value in any compared group (n = 1 has no spread, hence no interval); the
  row still reports the point value (`point_estimate`).

Any other claim (matches, better, ratios, at_most, at_least) measured by the seed in another setting
is still tested here, and its row carries a `setting_note`: the seed's absolute values do
not transfer, the relation may (an at_most limit should be setting-free, such as a ratio).

Torch-free and matplotlib-free.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

from ..utils.io import atomic_path, write_json
from .aggregate import MAXIMIZE, combined_energy_source, is_device_cost, is_modelled, metric_direction
from .stats import is_number

CONFIDENCE = 0.95
HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE = "holds", "does not hold", "inconclusive at this n", "not comparable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE)
RELATIONS = ("matches", "better", "ratio_at_most", "ratio_at_least")  # `method` against another group
LIMITS = ("at_most", "at_least")  # `method`'s own values against `limit`
BOUNDS = (*LIMITS, "ratio_at_least")  # judged on every seed's value, no interval
COMPARISONS = (*RELATIONS, "value", *LIMITS)
INTERVAL, EXACT, EVERY_SEED = "95% interval", "exact", "every seed"  # how a claim is judged
NO_CLAIMS = "no claims declared"
CLAIMS_JSON, CLAIMS_MD, CLAIMS_HTML = "claims.json", "claims.md", "claims.html"

# Metrics on [0, 1] shown as percent (differences in percentage points).
PERCENT_METRICS = ("accuracy", "macro_f1", "f1", "average_accuracy", "auc_retained_accuracy", "retained_auc",
                   "share_within_10pct")
JOULE_METRIC = re.compile(r"(?:^|_)j(?:_|$)")  # energy_j_per_sample, modelled_adapter_j_long_sample, e_max_j
SI_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"))
# Metrics already in percent (a surrogate's MAPE per target): no unit of their own target.
PERCENT_VALUED_PREFIXES = ("surrogate_mape_",)
# Metrics named for the unit they are in: *_pct in percent (a difference of two in pp),
# *_pp in percentage points already (forgetting_max_pp, bwt_pp: differences of scores).
PERCENT_SUFFIX, POINTS_SUFFIX = "_pct", "_pp"


class _Verdict(Exception):
    """Raised inside the checks to settle a claim before its interval is computed."""

    def __init__(self, verdict: str, reason: str):
        super().__init__(reason)
        self.verdict, self.reason = verdict, reason


# ---------------------------------------------------------------- formatting


def _is_percent(metric: str) -> bool:
    return metric in PERCENT_METRICS or metric.startswith(("rouge", "surrogate_within_10pct_"))


def _joule_scale(reference: float) -> tuple[float, str]:
    """(divisor, ' mJ') for values of about `reference` joules: one SI prefix per cell."""
    magnitude = abs(reference)
    if magnitude == 0:
        return 1.0, " J"
    return next(((scale, f" {prefix}J") for scale, prefix in SI_PREFIXES if magnitude >= scale),
                (SI_PREFIXES[-1][0], f" {SI_PREFIXES[-1][1]}J"))


def _unit(metric: str, diff: bool = False, ref: float | None = None) -> str:
    if _is_percent(metric) or metric.startswith(PERCENT_VALUED_PREFIXES) or metric.endswith(PERCENT_SUFFIX):
        return " pp" if diff else "%"
    if metric.endswith(POINTS_SUFFIX):
        return " pp"
    if JOULE_METRIC.search(metric):
        return _joule_scale(ref or 0.0)[1]
    for suffix, unit in (("_ms", " ms"), ("_s", " s"), ("_w", " W"), ("_mb", " MB")):
        if metric.endswith(suffix):
            return unit
    return ""


def _num(metric: str, value: float, diff: bool = False, ref: float | None = None) -> str:
    """`value` without its unit; `ref` (default: value) picks the SI prefix of joules."""
    sign = "+" if diff else ""
    if _is_percent(metric):
        return f"{100 * value:{sign}.1f}"
    if metric.startswith(PERCENT_VALUED_PREFIXES):
        return f"{value:{sign}.1f}"
    if metric.endswith((PERCENT_SUFFIX, POINTS_SUFFIX)):
        return f"{value:{sign}.2f}"
    if JOULE_METRIC.search(metric):
        return f"{value / _joule_scale(value if ref is None else ref)[0]:{sign}.4g}"
    if metric.endswith("_s") or metric.endswith("_ms"):
        return f"{value:{sign}.{1 if metric.endswith('_s') else 2}f}"
    if metric.endswith("_params"):
        return f"{value:{sign},.0f}"
    if metric.endswith("_ratio") or (value != 0 and abs(value) < 0.01):
        return f"{value:{sign}.4g}"
    if abs(value) < 10:  # correlations, F1, ROUGE: three decimals, as the seeds print them
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.4g}"


def format_value(metric: str, value: float | None, diff: bool = False, ref: float | None = None) -> str:
    """A value (or difference) in readable units: accuracy 0.941 -> '94.1%', a difference -> '+0.2 pp',
    5.66e-3 J -> '5.66 mJ' (`ref`, default the value, picks the prefix)."""
    if value is None:
        return "unavailable"
    ref = value if ref is None else ref
    return _num(metric, value, diff, ref) + _unit(metric, diff, ref)


def format_stats(metric: str, stats: dict) -> str:
    """'94.1 ± 0.3% (n=3)'; without a standard error '94.1% (n=1)'."""
    if stats.get("mean") is None:
        return f"unavailable (n={stats.get('n', 0)})"
    if stats.get("se") is None:
        return f"{format_value(metric, stats['mean'])} (n={stats['n']})"
    mean = stats["mean"]
    spread = f"{_num(metric, mean, ref=mean)} ± {_num(metric, stats['se'], ref=mean)}"
    return f"{spread}{_unit(metric, ref=mean)} (n={stats['n']})"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def format_estimate(metric: str, estimate: dict | None, point: dict | None = None) -> str:
    """'Δ +0.2 pp [-0.5, +0.9]' or 'ratio 1.04 [0.98, 1.10]'; 'ratio 0.018 (exact)', 'max 0.998
    (2 seeds)', 'ratio 53 (smallest of 1 seed)'; without an estimate the point value, if any."""
    if not estimate:
        if point:
            return f"{_point_text(metric, point)} (point value: no CI at n=1)"
        return "–"
    basis = estimate.get("basis", INTERVAL)
    if basis == INTERVAL:
        if estimate["kind"] == "ratio":
            return f"ratio {_ratio(estimate['value'])} {_interval(metric, estimate)}"
        low, high = (_num(metric, estimate[k], diff=True, ref=_span(estimate)) for k in ("ci_low", "ci_high"))
        return f"Δ {format_value(metric, estimate['value'], diff=True)} [{low}, {high}]"
    if basis == EXACT:
        return f"{_point_text(metric, estimate)} (exact)"
    n = len(estimate["per_seed"])
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    if estimate["kind"] in ("max", "min"):
        return f"{estimate['kind']} {format_value(metric, estimate['value'])} ({seeds})"
    return f"ratio {_ratio(estimate['value'])} (smallest of {seeds})"


def _point_text(metric: str, point: dict) -> str:
    if point["kind"] == "ratio":
        return f"ratio {_ratio(point['value'])}"
    return f"Δ {format_value(metric, point['value'], diff=True)}"


def _span(estimate: dict) -> float:
    return max(abs(estimate["ci_low"]), abs(estimate["ci_high"]))


def _interval(metric: str, estimate: dict) -> str:
    if estimate["kind"] == "ratio":
        return f"[{_ratio(estimate['ci_low'])}, {_ratio(estimate['ci_high'])}]"
    low, high = (format_value(metric, estimate[k], diff=True, ref=_span(estimate)) for k in ("ci_low", "ci_high"))
    return f"[{low}, {high}]"


def _budget(budget: float) -> str:
    return f"{budget:g}%"


# ---------------------------------------------------------------- statistics


def welch_df(se_a: float, n_a: int, se_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom from two standard errors (inf when both are 0)."""
    denominator = se_a**4 / (n_a - 1) + se_b**4 / (n_b - 1)
    return math.inf if denominator == 0 else (se_a**2 + se_b**2) ** 2 / denominator


def _estimate(kind: str, value: float, se: float, df: float) -> dict:
    quantile = float(student_t.ppf(0.5 + CONFIDENCE / 2, df))
    return {
        "kind": kind, "value": value, "se": se, "df": df, "t_quantile": quantile,
        "ci_low": value - quantile * se, "ci_high": value + quantile * se, "confidence": CONFIDENCE,
    }


def difference_estimate(a: dict, b: dict, sign: float = 1.0) -> dict:
    """sign * (mean_a - mean_b) with its Welch CI; a, b are {mean, se, n}."""
    se = math.hypot(a["se"], b["se"])
    return _estimate("difference", sign * (a["mean"] - b["mean"]), se, welch_df(a["se"], a["n"], b["se"], b["n"]))


def ratio_estimate(a: dict, b: dict) -> dict:
    """mean_a / mean_b with a delta-method CI at the difference's Welch t quantile."""
    ratio = a["mean"] / b["mean"]
    se = math.hypot(a["se"] / b["mean"], a["mean"] * b["se"] / b["mean"] ** 2)
    return _estimate("ratio", ratio, se, welch_df(a["se"], a["n"], b["se"], b["n"]))


def value_estimate(a: dict, seed_value: float) -> dict:
    return _estimate("difference", a["mean"] - seed_value, a["se"], a["n"] - 1)


# ---------------------------------------------------------------- our side


def _same_budget(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


def _group_of(family_obj: dict, method: str, budget: float) -> str | None:
    for group_id, prov in family_obj["groups"].items():
        if prov["method"] == method and _same_budget(prov["budget"], budget):
            return group_id
    return None


def _missing_group_reason(family_obj: dict, method: str, budget: float) -> str:
    budgets = sorted({prov["budget"] for prov in family_obj["groups"].values() if prov["method"] == method})
    if not budgets:
        return f"No {method} runs in this family."
    return f"No {method} runs at {_budget(budget)} in this family (it runs {method} at {', '.join(map(_budget, budgets))})."


def _unavailable_reason(metric: str, method: str, budget: float, stats: dict) -> str:
    if metric.startswith("energy"):
        if stats.get("energy_source") == "unavailable":
            return f"No energy counter on this machine: {metric} is unavailable for {method} (energy_source unavailable)."
        flags = ", ".join(stats.get("energy_flags") or []) or "no flag recorded"
        return f"No valid energy window for {method} ({flags}): {metric} is unavailable."
    return f"{metric} is unavailable (null) in every {method} run at {_budget(budget)}."


def our_setting(family_cfg: dict, family_obj: dict) -> dict:
    """The family's model and dataset names: from the runs' provenance, else the config."""
    first = next(iter(family_obj.get("groups", {}).values()), {})
    return {key: first.get(key) or family_cfg.get(key) for key in ("model", "dataset")}


def _norm(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _setting_differences(seed_setting: dict, ours: dict) -> list[str]:
    return [
        f"another {key}: {ours.get(key)} here, {seed_setting[key]} in the seed"
        for key in ("model", "dataset")
        if key in seed_setting and _norm(seed_setting[key]) != _norm(ours.get(key))
    ]


def _setting_text(setting: dict) -> str:
    return " on ".join(str(setting[key]) for key in ("model", "dataset") if setting.get(key))


def _seed_estimate(claim: dict, direction: str | None) -> dict | None:
    """The seed's own difference or ratio for a relation claim, when it reports both values."""
    values, method, against = claim.get("seed_values") or {}, claim["method"], claim.get("against")
    comparison = claim["comparison"]
    if comparison == "value":
        value = values.get(method)
        return None if value is None else {"kind": "value", "value": value}
    if comparison in LIMITS or (claim.get("against_metric") or claim["metric"]) != claim["metric"]:
        return None  # per-method seed values of one metric say nothing about these
    if method not in values or against not in values:
        return None
    if comparison in ("ratio_at_most", "ratio_at_least"):
        ratio = values[method] / values[against] if values[against] else None
        return {"kind": "ratio", "value": ratio}
    sign = -1.0 if comparison == "better" and direction not in (None, MAXIMIZE) else 1.0
    return {"kind": "difference", "value": sign * (values[method] - values[against])}


def _sides(claim: dict) -> list[tuple[str, str, str]]:
    """(key in the row's `ours`, method, metric) of each compared group: `method` first, then
    `against` for a relation (keyed '<against> <against_metric>' when that metric differs)."""
    metric = claim["metric"]
    sides = [(claim["method"], claim["method"], metric)]
    if claim["comparison"] in RELATIONS:
        against, against_metric = claim["against"], claim.get("against_metric") or metric
        sides.append((against if against_metric == metric else f"{against} {against_metric}", against, against_metric))
    return sides


def _ours(claim: dict, family_obj: dict) -> dict[str, dict]:
    """{key: our side}: the group's statistics of its metric, its per-seed values and provenance
    (group_id None: no runs of that method at the claim's budget)."""
    ours = {}
    for key, method, metric in _sides(claim):
        group_id = _group_of(family_obj, method, claim["budget"])
        side = {"method": method, "metric": metric, "group_id": group_id, "mean": None, "se": None, "n": 0,
                "values": {}}
        if group_id is not None:
            stats = family_obj["summary"].get(metric, {}).get(group_id) or {}
            prov = family_obj["groups"][group_id]
            per_run = family_obj["metrics"].get(metric, {})
            side.update({k: stats[k] for k in ("mean", "se", "n", "energy_source", "energy_flags") if k in stats})
            side["energy_table"] = prov.get("energy_table")
            side["values"] = {seed: per_run.get(run_id) for seed, run_id in zip(prov["seeds"], prov["run_ids"])}
        ours[key] = side
    return ours


def _first_two(ours: dict) -> tuple[dict, dict | None]:
    sides = list(ours.values())
    return sides[0], (sides[1] if len(sides) > 1 else None)


def _basis(claim: dict) -> str:
    """How a claim is judged: on every seed (bound claims), from exact values, or by an interval."""
    if claim["comparison"] in BOUNDS:
        return EVERY_SEED
    return EXACT if claim.get("exact") else INTERVAL


def _bound_text(claim: dict) -> str:
    """'±1.0 pp', '≤ 0.60', '≥ 1.80', '≤ 1' or '' (better): what the claim allows."""
    metric, comparison = claim["metric"], claim["comparison"]
    if comparison in ("matches", "value"):
        return "±" + format_value(metric, claim["tolerance"], diff=True).lstrip("+")
    if comparison == "ratio_at_most":
        return f"≤ {_ratio(claim['ratio'])}"
    if comparison == "ratio_at_least":
        return f"≥ {_ratio(claim['ratio'])}"
    if comparison in LIMITS:
        return f"{'≤' if comparison == 'at_most' else '≥'} {format_value(metric, claim['limit'])}"
    return ""


def _what(claim: dict, ours: dict) -> str:
    """'hest / tabs', 'tabs modelled_adapter_j_long_sample / hest e_max_j', 'hest - tabs'."""
    first, second = _first_two(ours)
    op = " / " if claim["comparison"] in ("ratio_at_most", "ratio_at_least") else " - "
    if second["metric"] == first["metric"]:
        return f"{first['method']}{op}{second['method']}"
    return f"{first['method']} {first['metric']}{op}{second['method']} {second['metric']}"


# ---------------------------------------------------------------- verdicts


def _check_comparable(claim: dict, family_obj: dict, ours: dict, setting: dict) -> None:
    """Raise a `not comparable here` verdict, or an `inconclusive at this n` one."""
    budget = claim["budget"]
    for side in ours.values():
        if side["group_id"] is None:
            raise _Verdict(NOT_COMPARABLE, _missing_group_reason(family_obj, side["method"], budget))
    for side in ours.values():
        if side["metric"] not in family_obj["summary"]:
            raise _Verdict(NOT_COMPARABLE, f"{side['metric']} is not in this family's metrics.json files.")
    for side in ours.values():
        if side["mean"] is None:
            raise _Verdict(NOT_COMPARABLE, _unavailable_reason(side["metric"], side["method"], budget, side))
    if claim["comparison"] == "value":
        if claim["method"] not in (claim.get("seed_values") or {}):
            raise _Verdict(NOT_COMPARABLE, f"The seed gives no value for {claim['method']}.")
        differences = _setting_differences(claim.get("seed_setting") or {}, setting)
        if differences:
            reason = "; ".join(differences)
            raise _Verdict(NOT_COMPARABLE, f"{reason[0].upper()}{reason[1:]}; the seed's absolute value does not transfer.")
    if claim.get("exact"):
        for side in ours.values():
            _check_exact(side)
    _, against = _first_two(ours)
    if claim["comparison"] == "ratio_at_most" and against["mean"] == 0:
        raise _Verdict(NOT_COMPARABLE,
                       f"The mean {against['metric']} of {against['method']} is 0: the ratio is undefined.")
    if _basis(claim) == INTERVAL:
        for key, side in ours.items():
            if side["n"] < 2:
                raise _Verdict(INCONCLUSIVE, f"n={side['n']} for {key}: no spread, so no confidence interval "
                                             "(needs 2 seeds or more).")


def _check_exact(side: dict) -> None:
    """An exact metric (fixed by the configuration) has one value in every seed."""
    present = {seed: value for seed, value in side["values"].items() if is_number(value)}
    if len(set(present.values())) > 1:
        shown = ", ".join(f"seed {seed}: {format_value(side['metric'], value)}" for seed, value in present.items())
        raise _Verdict(NOT_COMPARABLE, f"{side['metric']} is marked exact, but the {side['method']} seeds disagree "
                                       f"({shown}): it is not fixed by the configuration (drop `exact` to judge it "
                                       "with an interval).")


def _within(estimate: dict, low: float, high: float) -> str:
    if low <= estimate["ci_low"] and estimate["ci_high"] <= high:
        return HOLDS
    if estimate["ci_high"] < low or estimate["ci_low"] > high:
        return FAILS
    return INCONCLUSIVE


def _judge(claim: dict, ours: dict, direction: str | None) -> tuple[str, str, dict]:
    basis = _basis(claim)
    if basis == EVERY_SEED:
        return _judge_every_seed(claim, ours)
    if basis == EXACT:
        return _judge_exact(claim, ours, direction)
    return _judge_interval(claim, ours, direction)


def _judge_interval(claim: dict, ours: dict, direction: str | None) -> tuple[str, str, dict]:
    metric, method, against = claim["metric"], claim["method"], claim.get("against")
    comparison, level = claim["comparison"], f"{CONFIDENCE:.0%}"
    first, second = _first_two(ours)
    if comparison in ("matches", "value"):
        if comparison == "matches":
            estimate, what = difference_estimate(first, second), f"{method} - {against}"
        else:
            estimate, what = value_estimate(first, claim["seed_values"][method]), f"our {method} - the seed's"
        verdict = _within(estimate, -claim["tolerance"], claim["tolerance"])
        place = {HOLDS: "lies within", FAILS: "lies entirely outside", INCONCLUSIVE: "straddles"}[verdict]
        return verdict, (f"The {level} CI of {what}, {_interval(metric, estimate)}, {place} the tolerance "
                         f"{_bound_text(claim)}."), estimate
    if comparison == "better":
        estimate = difference_estimate(first, second, _better_sign(metric, direction))
        verdict = HOLDS if estimate["ci_low"] > 0 else FAILS if estimate["ci_high"] < 0 else INCONCLUSIVE
        place = {HOLDS: "is above 0", FAILS: "is below 0", INCONCLUSIVE: "contains 0"}[verdict]
        better = "higher" if direction == MAXIMIZE else "lower"
        return verdict, (f"The {level} CI of {method}'s advantage over {against} ({better} {metric} is better), "
                         f"{_interval(metric, estimate)}, {place}."), estimate
    estimate = ratio_estimate(first, second)
    bound = claim["ratio"]
    verdict = HOLDS if estimate["ci_high"] <= bound else FAILS if estimate["ci_low"] > bound else INCONCLUSIVE
    place = {HOLDS: "is at or below", FAILS: "is entirely above", INCONCLUSIVE: "straddles"}[verdict]
    return verdict, (f"The {level} CI of {_what(claim, ours)}, {_interval(metric, estimate)}, {place} "
                     f"the claimed bound {bound:.2f}."), estimate


def _better_sign(metric: str, direction: str | None) -> float:
    """+1 where higher is better, -1 where lower is; no direction: 'better' cannot be judged."""
    if direction is None:
        raise _Verdict(NOT_COMPARABLE, f"{metric} has no known direction: 'better' is undefined for it.")
    return 1.0 if direction == MAXIMIZE else -1.0


def _exact_estimate(kind: str, value: float) -> dict:
    return {"kind": kind, "value": value, "basis": EXACT, "se": 0.0, "ci_low": value, "ci_high": value}


def _judge_exact(claim: dict, ours: dict, direction: str | None) -> tuple[str, str, dict]:
    """Point values of a metric fixed by the configuration (every seed agrees: _check_exact)."""
    metric, method, comparison = claim["metric"], claim["method"], claim["comparison"]
    first, second = _first_two(ours)
    seeds = " and ".join(f"{side['n']} {side['method']} seed{'s' if side['n'] != 1 else ''}"
                         for side in (first, second) if side)
    basis = f"{metric} is exact (fixed by the configuration; {seeds} agree): "
    if comparison in ("matches", "value"):
        reference = second["mean"] if comparison == "matches" else claim["seed_values"][method]
        estimate = _exact_estimate("difference", first["mean"] - reference)
        what = _what(claim, ours) if comparison == "matches" else f"our {method} - the seed's"
        verdict = HOLDS if abs(estimate["value"]) <= claim["tolerance"] else FAILS
        place = "within" if verdict == HOLDS else "outside"
        return verdict, (f"{basis}{what} = {format_value(metric, estimate['value'], diff=True)}, {place} the "
                         f"tolerance {_bound_text(claim)}."), estimate
    if comparison == "better":
        sign = _better_sign(metric, direction)
        estimate = _exact_estimate("difference", sign * (first["mean"] - second["mean"]))
        verdict = HOLDS if estimate["value"] > 0 else FAILS
        better = "higher" if direction == MAXIMIZE else "lower"
        return verdict, (f"{basis}{method}'s advantage over {second['method']} ({better} {metric} is better) is "
                         f"{format_value(metric, estimate['value'], diff=True)}."), estimate
    estimate = _exact_estimate("ratio", first["mean"] / second["mean"])
    verdict = HOLDS if estimate["value"] <= claim["ratio"] else FAILS
    place = "at or below" if verdict == HOLDS else "above"
    return verdict, (f"{basis}{_what(claim, ours)} = {_ratio(estimate['value'])}, {place} the claimed bound "
                     f"{claim['ratio']:.2f}."), estimate


def _plural(n: int, word: str = "seed") -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _judge_limit(claim: dict, side: dict) -> tuple[str, str, dict]:
    """at_most: the largest value over seeds against `limit`; at_least: the smallest."""
    metric, at_most = claim["metric"], claim["comparison"] == "at_most"
    values = {seed: v for seed, v in side["values"].items() if is_number(v)}
    missing = [seed for seed in side["values"] if seed not in values]
    worst_seed = (max if at_most else min)(values, key=values.get)
    worst, limit = values[worst_seed], claim["limit"]
    estimate = {"kind": "max" if at_most else "min", "value": worst, "basis": EVERY_SEED, "seed": worst_seed,
                "per_seed": {str(seed): v for seed, v in values.items()}}
    shown, limit_text = format_value(metric, worst), format_value(metric, limit)
    extreme, past, within = ("largest", "exceeds", "≤") if at_most else ("smallest", "falls below", "≥")
    of = f"the {extreme} of {_plural(len(values))}"
    if (worst > limit) if at_most else (worst < limit):
        return FAILS, (f"Seed {worst_seed} of {side['method']} {past} the limit: {metric} {shown} "
                       f"{'>' if at_most else '<'} {limit_text} ({of})."), estimate
    if missing:
        return INCONCLUSIVE, (f"No seed {past} the limit {limit_text} ({extreme} {shown}), but {side['method']} "
                              f"seed(s) {missing} have no {metric} value."), estimate
    return HOLDS, (f"Every {side['method']} seed is within the limit: {metric} {shown} (seed {worst_seed}, "
                   f"{of}) {within} {limit_text}."), estimate


def _judge_every_seed(claim: dict, ours: dict) -> tuple[str, str, dict]:
    """at_most / at_least: the extreme value over seeds against `limit` (_judge_limit);
    ratio_at_least: the smallest per-seed ratio against `ratio`. One seed past the bound
    breaks the claim."""
    first, second = _first_two(ours)
    if claim["comparison"] in LIMITS:
        return _judge_limit(claim, first)
    ratios, unpaired = {}, []
    for seed in dict.fromkeys([*first["values"], *second["values"]]):
        numerator, denominator = first["values"].get(seed), second["values"].get(seed)
        if not (is_number(numerator) and is_number(denominator)):
            unpaired.append(seed)
        elif denominator == 0:
            raise _Verdict(NOT_COMPARABLE, f"{second['method']}'s {second['metric']} is 0 in seed {seed}: "
                                           "the ratio is undefined.")
        else:
            ratios[seed] = numerator / denominator
    if not ratios:
        raise _Verdict(NOT_COMPARABLE, f"No seed has both {first['method']}'s {first['metric']} and "
                                       f"{second['method']}'s {second['metric']}.")
    low_seed = min(ratios, key=ratios.get)
    low, bound = ratios[low_seed], claim["ratio"]
    estimate = {"kind": "ratio", "value": low, "basis": EVERY_SEED, "seed": low_seed,
                "per_seed": {str(seed): r for seed, r in ratios.items()}}
    what, of = _what(claim, ours), f"the smallest of {_plural(len(ratios))}"
    if low < bound:
        return FAILS, f"Seed {low_seed}: {what} = {_ratio(low)}, below the claimed {bound:.2f} ({of}).", estimate
    if unpaired:
        return INCONCLUSIVE, (f"No seed is below the claimed {bound:.2f} (smallest {what} = {_ratio(low)}), but "
                              f"seed(s) {unpaired} lack one of the two values."), estimate
    return HOLDS, (f"Every seed reaches the claimed ratio: {what} = {_ratio(low)} (seed {low_seed}, {of}) "
                   f"≥ {bound:.2f}."), estimate


def _point_estimate(claim: dict, ours: dict, direction: str | None) -> dict | None:
    """The interval rules' difference or ratio from the means alone: what a row at n = 1 shows."""
    if _basis(claim) != INTERVAL:
        return None
    first, second = _first_two(ours)
    if first["mean"] is None or (second is not None and second["mean"] is None):
        return None
    comparison = claim["comparison"]
    if comparison == "value":
        seed_value = (claim.get("seed_values") or {}).get(claim["method"])
        return None if seed_value is None else {"kind": "difference", "value": first["mean"] - seed_value}
    if comparison == "ratio_at_most":
        return None if second["mean"] == 0 else {"kind": "ratio", "value": first["mean"] / second["mean"]}
    if comparison == "better" and direction is None:
        return None
    sign = -1.0 if comparison == "better" and direction != MAXIMIZE else 1.0
    return {"kind": "difference", "value": sign * (first["mean"] - second["mean"])}


def check_claim(family: str, family_cfg: dict, family_obj: dict, claim: dict) -> dict:
    """One claim, filled with our measurements, a verdict and its reason."""
    metric, budget, comparison = claim["metric"], claim["budget"], claim["comparison"]
    direction = metric_direction(metric, family_cfg.get("primary_metric"))
    ours = _ours(claim, family_obj)
    setting, seed_setting = our_setting(family_cfg, family_obj), claim.get("seed_setting") or {}
    setting_note = None
    if comparison != "value" and _setting_differences(seed_setting, setting):
        setting_note = (f"seed: {_setting_text(seed_setting)}; here: {_setting_text(setting)}; "
                        "the seed's absolute values are not comparable")
    modelled = any(is_modelled(side["metric"]) for side in ours.values())
    tables = [side["energy_table"] for side in ours.values() if side.get("energy_table")]
    table = combined_energy_source(tables) if tables else None
    estimate = None
    try:
        _check_comparable(claim, family_obj, ours, setting)
        verdict, reason, estimate = _judge(claim, ours, direction)
    except _Verdict as settled:
        verdict, reason = settled.verdict, settled.reason
    point = _point_estimate(claim, ours, direction)
    if verdict == INCONCLUSIVE and estimate is None and point is not None:
        bound = _bound_text(claim)
        allowed = f"tolerance {bound}" if comparison in ("matches", "value") else f"claimed {bound or '> 0'}"
        reason += f" Point value: {_point_text(metric, point)} ({allowed})."
    if modelled:
        reason += (f" Modelled numbers: priced by the energy table ({table or 'source not recorded'}), "
                   "not measured.")
    device_source = _device_cost_source(family_obj, ours)
    if device_source:
        reason += (f" About the unseen device {device_source['device']}, whose rows and costs are "
                   f"{device_source['source']}" + (" (the roofline model of its published figures), not measured."
                                                   if device_source["source"] == "simulated" else "."))
    return {
        "family": family,
        "claim": claim["claim"],
        "seed": claim["seed"],
        "metric": metric,
        "against_metric": claim.get("against_metric"),
        "direction": direction,
        "budget": budget,
        "method": claim["method"],
        "against": claim.get("against"),
        "comparison": comparison,
        "tolerance": claim.get("tolerance"),
        "ratio": claim.get("ratio"),
        "limit": claim.get("limit"),
        "exact": bool(claim.get("exact")),
        "basis": _basis(claim),
        "modelled": modelled,
        "energy_table": table if modelled else None,
        "device_cost_source": device_source,
        "ours": {key: (None if side["group_id"] is None else {k: side[k] for k in ("mean", "se", "n")})
                 for key, side in ours.items()},
        "ours_metrics": {key: side["metric"] for key, side in ours.items()},
        "estimate": estimate,
        "point_estimate": point,
        "seed_values": claim.get("seed_values") or {},
        "seed_estimate": _seed_estimate(claim, direction),
        "seed_setting": seed_setting,
        "our_setting": setting,
        "setting_note": setting_note,
        "verdict": verdict,
        "reason": reason,
    }


def _device_cost_source(family_obj: dict, ours: dict) -> dict | None:
    """{device, source} when the claim's metrics are about the family's unseen device."""
    if not any(is_device_cost(side["metric"]) for side in ours.values()):
        return None
    frame = family_obj.get("hypervolume") or {}
    return {"device": ", ".join(frame.get("device") or ["not recorded"]),
            "source": "+".join(frame.get("cost_source") or ["not recorded"])}


def check_claims(family: str, family_cfg: dict, family_obj: dict) -> list[dict]:
    """One row per claim the family declares (none: an empty list)."""
    return [check_claim(family, family_cfg, family_obj, claim) for claim in family_cfg.get("claims") or []]


# ---------------------------------------------------------------- tables


def _seed_cell(row: dict) -> str:
    metric, values = row["metric"], row["seed_values"]
    shown = [f"{m} {format_value(metric, values[m])}" for m in (row["method"], row["against"]) if m and m in values]
    seed_estimate = row["seed_estimate"]
    if seed_estimate and seed_estimate["value"] is not None and seed_estimate["kind"] != "value":
        if seed_estimate["kind"] == "ratio":
            shown.append(f"ratio {_ratio(seed_estimate['value'])}")
        else:
            shown.append(f"Δ {format_value(metric, seed_estimate['value'], diff=True)}")
    if not shown and row["comparison"] in (*BOUNDS, "ratio_at_most"):
        shown.append(f"claimed {_bound_text(row)}")  # the seed's number is the bound itself
    return "; ".join(shown) or "–"


def _ours_cell(row: dict) -> str:
    metrics = row.get("ours_metrics") or {}
    return "; ".join(
        f"{key} {'no runs' if stats is None else format_stats(metrics.get(key, row['metric']), stats)}"
        for key, stats in row["ours"].items()
    )


def _why_cell(row: dict) -> str:
    return row["reason"] + (f" Setting: {row['setting_note']}." if row["setting_note"] else "")


COLUMNS = ("family", "claim", "seed", "seed value(s)", "ours (mean ± s.e., n)", "Δ or ratio [95% CI]", "verdict",
           "reason")


def _claim_cell(row: dict) -> str:
    metric = row["metric"] + (f" / {row['against_metric']}" if row.get("against_metric") else "")
    comparison = " ".join(part for part in (row["comparison"], _bound_text(row)) if part)
    notes = [f"budget {_budget(row['budget'])}"]
    if row.get("exact"):
        notes.append("exact")
    if row.get("modelled"):
        notes.append(f"MODELLED (energy table: {row.get('energy_table') or 'not recorded'}), not measured")
    source = row.get("device_cost_source")
    if source and "simulated" in source["source"]:
        notes.append(f"SIMULATED device ({source['device']}: roofline model), not measured")
    return f"{row['claim']} ({metric}, {comparison}, {', '.join(notes)})"


def _cells(row: dict) -> list[str]:
    return [row["family"], _claim_cell(row), row["seed"], _seed_cell(row), _ours_cell(row),
            format_estimate(row["metric"], row["estimate"], row.get("point_estimate")), row["verdict"], _why_cell(row)]


def _all_rows(per_family: dict[str, list[dict]]) -> list[dict]:
    return [row for rows in per_family.values() for row in rows]


def claims_markdown(per_family: dict[str, list[dict]]) -> str:
    """A Markdown table for the README (one row per claim), or the words 'no claims declared'."""
    rows = _all_rows(per_family)
    if not rows:
        return f"_{NO_CLAIMS}_\n"
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |")
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.35em 0.6em; vertical-align: top; text-align: left; }
th { background: #eee; }
td.verdict { font-weight: bold; white-space: nowrap; }
.holds { background: #d4edda; } .does-not-hold { background: #f8d7da; }
.inconclusive-at-this-n { background: #fff3cd; } .not-comparable-here { background: #e2e3e5; }
"""


def claims_html(per_family: dict[str, list[dict]]) -> str:
    """A self-contained HTML page: the claims table with verdicts coloured."""
    rows = _all_rows(per_family)
    title = "Seed claims checked against these runs"
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{title}</h1>",
             f"<p>Verdicts use {CONFIDENCE:.0%} confidence intervals (Welch's t) over seeds; "
             "see wattpeft.report.claims for the rules.</p>"]
    if not rows:
        parts.append(f"<p>{NO_CLAIMS}</p>")
    else:
        parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
        for row in rows:
            cells = [html.escape(cell) for cell in _cells(row)]
            css = re.sub(r"[^a-z]+", "-", row["verdict"])
            cells[6] = f'<td class="verdict {css}">{cells[6]}</td>'
            parts.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_claims(families: dict[str, tuple[dict, dict]], out_dir: Path | str) -> dict:
    """Check every family's claims; write claims.json, claims.md and claims.html in out_dir.

    `families` maps a family name to (family config, family object of aggregated_metrics.json).
    """
    per_family = {}
    for name, (family_cfg, family_obj) in families.items():
        rows = check_claims(name, family_cfg, family_obj)
        if rows:
            per_family[name] = rows
    n_claims = sum(len(rows) for rows in per_family.values())
    document = {
        "schema_version": 1,
        "confidence": CONFIDENCE,
        "verdicts": list(VERDICTS),
        "n_claims": n_claims,
        "note": None if n_claims else NO_CLAIMS,
        "families": per_family,
    }
    out_dir = Path(out_dir)
    write_json(out_dir / CLAIMS_JSON, document)
    for name, text in ((CLAIMS_MD, claims_markdown(per_family)), (CLAIMS_HTML, claims_html(per_family))):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return document
