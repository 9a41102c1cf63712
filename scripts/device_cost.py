"""Rule device_cost: an export's configuration and its cost on the family's unseen device."""

from wattpeft.stages.devices import run_device_cost
from wattpeft.stages.logging import logged

with logged(snakemake):
    p, inp = snakemake.params, snakemake.input
    run_device_cost(inp.export, inp.data, inp.model, p.model_name, p.devices, p.surrogate, inp.summary,
                    inp.surrogate_evaluation, snakemake.output[0])
