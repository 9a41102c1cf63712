"""Rule aggregate_family: one family's comparison from its runs' metrics.json files."""

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_family_aggregate

with logged(snakemake):
    inp = snakemake.input
    run_family_aggregate(
        list(inp.metrics), snakemake.wildcards.family, snakemake.params.family_cfg, snakemake.output[0],
        extras={name: path for name, path in inp.items() if name != "metrics"},
    )
