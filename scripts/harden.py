"""Rule harden: export the inference model of one run."""

from wattpeft.stages.harden import run_harden
from wattpeft.stages.logging import logged

with logged(snakemake):
    inp = snakemake.input
    run_harden(inp.config, inp.adapter, inp.data, inp.model, snakemake.output[0], threads=snakemake.threads)
