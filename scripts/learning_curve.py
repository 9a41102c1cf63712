"""Rule learning_curve: one run's training loss and validation metric against steps."""

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_learning_curve

with logged(snakemake):
    run_learning_curve(snakemake.input[0], snakemake.output.png, snakemake.wildcards.run)
