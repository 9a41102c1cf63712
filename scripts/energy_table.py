"""Rule energy_table: the device's joules per FLOP of int8 and 16-bit GEMMs (or the defaults)."""

from wattpeft.stages.energy_table import run_energy_table
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_energy_table(snakemake.wildcards.device, snakemake.output[0], threads=snakemake.params.measure_threads)
