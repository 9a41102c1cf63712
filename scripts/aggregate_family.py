"""Rule aggregate_family: one family's comparison from its runs' metrics.json files."""

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_family_aggregate

with logged(snakemake):
    run_family_aggregate(
        list(snakemake.input), snakemake.wildcards.family, snakemake.params.family_cfg, snakemake.output[0]
    )
