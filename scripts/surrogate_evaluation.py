"""Rule surrogate_evaluation: the surrogate against per-device regressions, each device held out."""

from wattpeft.stages.logging import logged
from wattpeft.stages.surrogate import run_surrogate_evaluation

with logged(snakemake):
    p, inp = snakemake.params, snakemake.input
    run_surrogate_evaluation(inp.table, p.devices, p.surrogate, inp.model, p.model_name, snakemake.output[0])
