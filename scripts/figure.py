"""Rule figure: one comparison figure of one family, as PNG and PDF."""

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_figure

with logged(snakemake):
    run_figure(snakemake.params.kind, snakemake.wildcards.family, snakemake.input[0], snakemake.output.png)
