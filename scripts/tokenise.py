"""Rule tokenise: a dataset's splits as tokenised parquet plus a manifest."""

from wattpeft.stages.data import run_tokenise
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_tokenise(
        snakemake.wildcards.dataset, snakemake.params.spec, snakemake.input.model,
        snakemake.output[0], threads=snakemake.threads,
    )
