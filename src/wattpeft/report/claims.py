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

Before any of that:

* not comparable here: the method (or `against`) has no runs at the claim's budget in this
  family; the metric is absent or unavailable (null) in the runs; an energy metric whose
  energy source is `unavailable` (no energy counter on this machine); a `better` claim on a
  metric with no known direction; a ratio whose denominator mean is 0; and, for `value`
  claims only, the family's model or dataset differs from the claim's `seed_setting`
  (names compared case-insensitively, ignoring punctuation).
* inconclusive at this n: fewer than 2 seeds with a value in any compared group (n = 1
  has no spread, hence no interval).

A relation claim (matches, better, ratio_at_most) measured by the seed in another setting
is still tested here, and its row carries a `setting_note`: the seed's absolute values do
not transfer, the relation may.

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
from .aggregate import MAXIMIZE, metric_direction

CONFIDENCE = 0.95
HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE = "holds", "does not hold", "inconclusive at this n", "not comparable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE)
RELATIONS = ("matches", "better", "ratio_at_most")
NO_CLAIMS = "no claims declared"
CLAIMS_JSON, CLAIMS_MD, CLAIMS_HTML = "claims.json", "claims.md", "claims.html"

# Metrics on [0, 1] shown as percent (differences in percentage points).
PERCENT_METRICS = ("accuracy", "macro_f1", "f1", "average_accuracy", "auc_retained_accuracy", "share_within_10pct")


class _Verdict(Exception):
    """Raised inside the checks to settle a claim before its interval is computed."""

    def __init__(self, verdict: str, reason: str):
        super().__init__(reason)
        self.verdict, self.reason = verdict, reason


# ---------------------------------------------------------------- formatting


def _is_percent(metric: str) -> bool:
    return metric in PERCENT_METRICS or metric.startswith("rouge")


def _unit(metric: str, diff: bool = False) -> str:
    if _is_percent(metric):
        return " pp" if diff else "%"
    for suffix, unit in (("_ms", " ms"), ("_s", " s"), ("_w", " W"), ("_mb", " MB")):
        if metric.endswith(suffix):
            return unit
    return " J" if metric.startswith("energy_j") else ""


def _num(metric: str, value: float, diff: bool = False) -> str:
    sign = "+" if diff else ""
    if _is_percent(metric):
        return f"{100 * value:{sign}.1f}"
    if metric.endswith("_s") or metric.endswith("_ms"):
        return f"{value:{sign}.{1 if metric.endswith('_s') else 2}f}"
    if abs(value) < 10:  # correlations, F1, ROUGE: three decimals, as the seeds print them
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.4g}"


def format_value(metric: str, value: float | None, diff: bool = False) -> str:
    """A value (or difference) in readable units: accuracy 0.941 -> '94.1%', a difference -> '+0.2 pp'."""
    if value is None:
        return "unavailable"
    return _num(metric, value, diff) + _unit(metric, diff)


def format_stats(metric: str, stats: dict) -> str:
    """'94.1 ± 0.3% (n=3)'; without a standard error '94.1% (n=1)'."""
    if stats.get("mean") is None:
        return f"unavailable (n={stats.get('n', 0)})"
    if stats.get("se") is None:
        return f"{format_value(metric, stats['mean'])} (n={stats['n']})"
    return f"{_num(metric, stats['mean'])} ± {_num(metric, stats['se'])}{_unit(metric)} (n={stats['n']})"


def format_estimate(metric: str, estimate: dict | None) -> str:
    """'Δ +0.2 pp [-0.5, +0.9]' or 'ratio 1.04 [0.98, 1.10]'."""
    if not estimate:
        return "–"
    if estimate["kind"] == "ratio":
        return f"ratio {estimate['value']:.2f} {_interval(metric, estimate)}"
    low, high = (_num(metric, estimate[k], diff=True) for k in ("ci_low", "ci_high"))
    return f"Δ {format_value(metric, estimate['value'], diff=True)} [{low}, {high}]"


def _interval(metric: str, estimate: dict) -> str:
    if estimate["kind"] == "ratio":
        return f"[{estimate['ci_low']:.2f}, {estimate['ci_high']:.2f}]"
    low, high = (format_value(metric, estimate[k], diff=True) for k in ("ci_low", "ci_high"))
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
    if method not in values or against not in values:
        return None
    if comparison == "ratio_at_most":
        ratio = values[method] / values[against] if values[against] else None
        return {"kind": "ratio", "value": ratio}
    sign = -1.0 if comparison == "better" and direction not in (None, MAXIMIZE) else 1.0
    return {"kind": "difference", "value": sign * (values[method] - values[against])}


# ---------------------------------------------------------------- verdicts


def _check_comparable(claim: dict, family_obj: dict, ours: dict, setting: dict) -> None:
    """Raise a `not comparable here` verdict, or an `inconclusive at this n` one."""
    metric, budget = claim["metric"], claim["budget"]
    for method, stats in ours.items():
        if stats is None:
            raise _Verdict(NOT_COMPARABLE, _missing_group_reason(family_obj, method, budget))
    if metric not in family_obj["summary"]:
        raise _Verdict(NOT_COMPARABLE, f"{metric} is not in this family's metrics.json files.")
    for method, stats in ours.items():
        if stats["mean"] is None:
            raise _Verdict(NOT_COMPARABLE, _unavailable_reason(metric, method, budget, stats))
    if claim["comparison"] == "value":
        if claim["method"] not in (claim.get("seed_values") or {}):
            raise _Verdict(NOT_COMPARABLE, f"The seed gives no value for {claim['method']}.")
        differences = _setting_differences(claim.get("seed_setting") or {}, setting)
        if differences:
            reason = "; ".join(differences)
            raise _Verdict(NOT_COMPARABLE, f"{reason[0].upper()}{reason[1:]}; the seed's absolute value does not transfer.")
    if claim["comparison"] == "ratio_at_most" and ours[claim["against"]]["mean"] == 0:
        raise _Verdict(NOT_COMPARABLE, f"The mean {metric} of {claim['against']} is 0: the ratio is undefined.")
    for method, stats in ours.items():
        if stats["n"] < 2:
            raise _Verdict(INCONCLUSIVE, f"n={stats['n']} for {method}: no spread, so no confidence interval (needs 2 seeds or more).")


def _within(estimate: dict, low: float, high: float) -> str:
    if low <= estimate["ci_low"] and estimate["ci_high"] <= high:
        return HOLDS
    if estimate["ci_high"] < low or estimate["ci_low"] > high:
        return FAILS
    return INCONCLUSIVE


def _judge(claim: dict, ours: dict, direction: str | None) -> tuple[str, str, dict]:
    metric, method, against = claim["metric"], claim["method"], claim.get("against")
    comparison, level = claim["comparison"], f"{CONFIDENCE:.0%}"
    if comparison in ("matches", "value"):
        tol = claim["tolerance"]
        if comparison == "matches":
            estimate, what = difference_estimate(ours[method], ours[against]), f"{method} - {against}"
        else:
            estimate, what = value_estimate(ours[method], claim["seed_values"][method]), f"our {method} - the seed's"
        verdict = _within(estimate, -tol, tol)
        place = {HOLDS: "lies within", FAILS: "lies entirely outside", INCONCLUSIVE: "straddles"}[verdict]
        tol_text = "±" + format_value(metric, tol, diff=True).lstrip("+")
        return verdict, f"The {level} CI of {what}, {_interval(metric, estimate)}, {place} the tolerance {tol_text}.", estimate
    if comparison == "better":
        if direction is None:
            raise _Verdict(NOT_COMPARABLE, f"{metric} has no known direction: 'better' is undefined for it.")
        sign = 1.0 if direction == MAXIMIZE else -1.0
        estimate = difference_estimate(ours[method], ours[against], sign)
        verdict = HOLDS if estimate["ci_low"] > 0 else FAILS if estimate["ci_high"] < 0 else INCONCLUSIVE
        place = {HOLDS: "is above 0", FAILS: "is below 0", INCONCLUSIVE: "contains 0"}[verdict]
        better = "higher" if direction == MAXIMIZE else "lower"
        return verdict, (f"The {level} CI of {method}'s advantage over {against} ({better} {metric} is better), "
                         f"{_interval(metric, estimate)}, {place}."), estimate
    estimate = ratio_estimate(ours[method], ours[against])
    bound = claim["ratio"]
    verdict = HOLDS if estimate["ci_high"] <= bound else FAILS if estimate["ci_low"] > bound else INCONCLUSIVE
    place = {HOLDS: "is at or below", FAILS: "is entirely above", INCONCLUSIVE: "straddles"}[verdict]
    return verdict, (f"The {level} CI of {method} / {against}, {_interval(metric, estimate)}, {place} "
                     f"the claimed bound {bound:.2f}."), estimate


def check_claim(family: str, family_cfg: dict, family_obj: dict, claim: dict) -> dict:
    """One claim, filled with our measurements, a verdict and its reason."""
    metric, budget, comparison = claim["metric"], claim["budget"], claim["comparison"]
    direction = metric_direction(metric, family_cfg.get("primary_metric"))
    methods = [claim["method"]] + ([claim["against"]] if comparison in RELATIONS else [])
    ours = {}
    for method in methods:
        group_id = _group_of(family_obj, method, budget)
        stats = family_obj["summary"].get(metric, {}).get(group_id) if group_id else None
        if group_id is None:
            ours[method] = None
        elif stats is None:
            ours[method] = {"mean": None, "se": None, "n": 0, "group_id": group_id}
        else:
            ours[method] = {"mean": stats["mean"], "se": stats["se"], "n": stats["n"], "group_id": group_id,
                            "energy_source": stats.get("energy_source"), "energy_flags": stats.get("energy_flags")}
    setting, seed_setting = our_setting(family_cfg, family_obj), claim.get("seed_setting") or {}
    setting_note = None
    if comparison in RELATIONS and _setting_differences(seed_setting, setting):
        setting_note = (f"seed: {_setting_text(seed_setting)}; here: {_setting_text(setting)}; "
                        "the seed's absolute values are not comparable")
    estimate = None
    try:
        _check_comparable(claim, family_obj, ours, setting)
        verdict, reason, estimate = _judge(claim, ours, direction)
    except _Verdict as settled:
        verdict, reason = settled.verdict, settled.reason
    return {
        "family": family,
        "claim": claim["claim"],
        "seed": claim["seed"],
        "metric": metric,
        "direction": direction,
        "budget": budget,
        "method": claim["method"],
        "against": claim.get("against"),
        "comparison": comparison,
        "tolerance": claim.get("tolerance"),
        "ratio": claim.get("ratio"),
        "ours": {m: (None if s is None else {k: s[k] for k in ("mean", "se", "n")}) for m, s in ours.items()},
        "estimate": estimate,
        "seed_values": claim.get("seed_values") or {},
        "seed_estimate": _seed_estimate(claim, direction),
        "seed_setting": seed_setting,
        "our_setting": setting,
        "setting_note": setting_note,
        "verdict": verdict,
        "reason": reason,
    }


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
            shown.append(f"ratio {seed_estimate['value']:.2f}")
        else:
            shown.append(f"Δ {format_value(metric, seed_estimate['value'], diff=True)}")
    return "; ".join(shown) or "–"


def _ours_cell(row: dict) -> str:
    return "; ".join(
        f"{method} {'no runs' if stats is None else format_stats(row['metric'], stats)}"
        for method, stats in row["ours"].items()
    )


def _why_cell(row: dict) -> str:
    return row["reason"] + (f" Setting: {row['setting_note']}." if row["setting_note"] else "")


COLUMNS = ("family", "claim", "seed", "seed value(s)", "ours (mean ± s.e., n)", "Δ or ratio [95% CI]", "verdict",
           "reason")


def _cells(row: dict) -> list[str]:
    claim = f"{row['claim']} ({row['metric']}, {row['comparison']}, budget {_budget(row['budget'])})"
    return [row["family"], claim, row["seed"], _seed_cell(row), _ours_cell(row),
            format_estimate(row["metric"], row["estimate"]), row["verdict"], _why_cell(row)]


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
