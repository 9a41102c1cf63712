"""Rule wandb_mirror: replay one finished run's local log to Weights & Biases."""

from wattpeft.stages.finetune import run_wandb_mirror
from wattpeft.stages.logging import logged

with logged(snakemake):
    inp = snakemake.input
    run_wandb_mirror(snakemake.params.run_cfg, inp.log, inp.summary, snakemake.output[0])
