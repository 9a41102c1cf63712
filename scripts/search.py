"""Rule search: optuna search for one (family, method, budget) group."""

from wattpeft.stages.common import method_needs
from wattpeft.stages.finetune import run_search
from wattpeft.stages.logging import logged

with logged(snakemake):
    run_search(
        snakemake.params.run_cfg, snakemake.input.data, snakemake.input.model,
        snakemake.output[0], threads=snakemake.threads, needs=method_needs(snakemake.input),
        code={"search": snakemake.params.code, "method": snakemake.params.method_code},
    )
