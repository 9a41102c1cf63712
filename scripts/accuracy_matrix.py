"""Rule accuracy_matrix: every task's test score after every task (and of the bare backbone)."""

from wattpeft.stages.continual import run_accuracy_matrix
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_accuracy_matrix(
        snakemake.params.run_cfg, list(snakemake.input.data), snakemake.input.model, snakemake.input.snapshots,
        snakemake.output[0], snakemake.params.eval_cfg, threads=snakemake.threads,
    )
