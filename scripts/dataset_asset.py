"""Rule dataset_asset: materialise one dataset package, verified by sha256."""

from wattpeft.stages.assets import run_dataset_asset
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_dataset_asset(snakemake.wildcards.asset, snakemake.output[0], snakemake.threads)
