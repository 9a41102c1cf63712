"""How long a no-op dry run takes: `snakemake -n` on the default config, after `make run`.

    .venv/bin/python bench/dry_run_time.py            # in the repository root, after make run
    .venv/bin/python bench/dry_run_time.py --repeats 7

Target: under 2 s. Prints the median of `--repeats` runs, side by side with the bare cost
of starting Python and importing Snakemake's command line (what no workflow can avoid),
and whether the dry run found nothing to do (a no-op) or planned jobs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 2.0


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dry = [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
    bare = [sys.executable, "-c", "import snakemake.cli"]
    timed(dry)  # one unmeasured run: file-system caches
    dry_s, bare_s, output = [], [], ""
    for _ in range(args.repeats):
        elapsed, output = timed(dry)
        dry_s.append(elapsed)
        bare_s.append(timed(bare)[0])
    no_op = "Nothing to be done" in output
    dry_median, bare_median = statistics.median(dry_s), statistics.median(bare_s)
    print(f"snakemake -n (default config)  median {dry_median:.2f} s over {args.repeats} runs "
          f"({'no-op: nothing to be done' if no_op else 'jobs planned: run make run first for a no-op'})")
    print(f"python -c 'import snakemake.cli'  median {bare_median:.2f} s")
    print(f"dry run / bare import: {dry_median / bare_median:.2f}x; workflow's own share {dry_median - bare_median:.2f} s")
    print(f"target < {TARGET_S:.1f} s: {'met' if dry_median < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
