"""Rule device_measure: this machine's rows over the measure grid, labelled measured."""

from wattpeft.stages.devices import run_device_measure
from wattpeft.stages.logging import logged

with logged(snakemake):
    p = snakemake.params
    run_device_measure(
        p.profiling["device"], p.devices, snakemake.input.model,
        p.model_name, p.profiling, snakemake.output[0], threads=p.profiling["measure_threads"],
    )
