"""Rule device_import: a CSV measured elsewhere, validated, labelled imported."""

from wattpeft.stages.devices import run_device_import
from wattpeft.stages.logging import logged

with logged(snakemake):
    p, inp = snakemake.params, snakemake.input
    run_device_import(snakemake.wildcards.hw, inp.csv, p.devices, inp.model, p.model_name, snakemake.output[0])
