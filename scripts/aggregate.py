"""Rule aggregate: the top-level comparison/aggregated_metrics.json."""

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_combine

with logged(snakemake):
    run_combine(list(snakemake.input), snakemake.params.headline, snakemake.output[0])
