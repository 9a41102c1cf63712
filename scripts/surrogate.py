"""Rule surrogate: the meta-surrogate, trained without the unseen device, calibrated on it."""

from wattpeft.stages.logging import logged
from wattpeft.stages.surrogate import run_surrogate

with logged(snakemake):
    p, inp = snakemake.params, snakemake.input
    run_surrogate(inp.table, p.devices, p.surrogate, inp.model, p.model_name, snakemake.output[0])
