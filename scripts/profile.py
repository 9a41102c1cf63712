"""Rule profile: energy and latency of one export on this device."""

from wattpeft.stages.logging import logged
from wattpeft.stages.profile import run_profile

with logged(snakemake):
    inp = snakemake.input
    run_profile(
        inp.export, inp.data, snakemake.params.profiling, snakemake.wildcards.device,
        snakemake.output[0], threads=snakemake.params.profiling["measure_threads"],
    )
