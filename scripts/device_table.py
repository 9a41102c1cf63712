"""Rule device_table: every device's rows of one family in one table."""

from wattpeft.stages.devices import run_device_table
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_device_table(list(snakemake.input), snakemake.output[0])
