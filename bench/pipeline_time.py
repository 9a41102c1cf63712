"""Where the default pipeline's time goes: job-seconds per family and per stage, measured.

Reads the `benchmarks/` TSVs that Snakemake's `benchmark:` directives write (one per job)
and sums wall seconds by family (run/group/family wildcards) and by stage. Shared work
(assets, tokenisation) is reported on its own line.

    python bench/pipeline_time.py [benchmarks]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd


def family_of(tsv: Path, stage: str, root: Path) -> str:
    if stage in ("assets", "data"):
        return "shared (assets, data)"
    if stage in ("devices", "surrogate"):  # benchmarks/<stage>/<family>/<job>.tsv
        return tsv.relative_to(root).parts[1]
    return tsv.stem.removeprefix("aggregate-").split("--")[0]


def main(root: str = "benchmarks") -> None:
    per_family: dict[str, float] = defaultdict(float)
    per_stage: dict[str, float] = defaultdict(float)
    for tsv in sorted(Path(root).rglob("*.tsv")):
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].sum())
        stage = tsv.relative_to(root).parts[0]
        per_stage[stage] += seconds
        per_family[family_of(tsv, stage, Path(root))] += seconds
    total = sum(per_family.values())
    if not total:
        sys.exit(f"no benchmark files under {root}/: run the pipeline first")
    print(f"{'family':<24}{'job-seconds':>12}{'share':>8}")
    for family, seconds in sorted(per_family.items(), key=lambda kv: -kv[1]):
        print(f"{family:<24}{seconds:>12.0f}{seconds / total:>8.0%}")
    print(f"\n{'stage':<24}{'job-seconds':>12}{'share':>8}")
    for stage, seconds in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<24}{seconds:>12.0f}{seconds / total:>8.0%}")
    print(f"\ntotal job-seconds {total:.0f} (jobs run side by side, so wall time is shorter)")


if __name__ == "__main__":
    main(*sys.argv[1:])
