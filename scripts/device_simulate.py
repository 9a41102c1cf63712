"""Rule device_simulate: one simulated device's rows (roofline model), labelled simulated."""

from wattpeft.stages.devices import run_device_simulate
from wattpeft.stages.logging import logged

with logged(snakemake):
    p = snakemake.params
    run_device_simulate(snakemake.wildcards.hw, p.devices, snakemake.input.model, p.model_name, snakemake.output[0])
