"""Rule finetune: train one run (resumes from its last checkpoint if one exists)."""

from pathlib import Path

from wattpeft.stages.common import method_needs
from wattpeft.stages.finetune import run_finetune
from wattpeft.stages.logging import logged

with logged(snakemake):
    out = snakemake.output
    run_finetune(
        snakemake.params.run_cfg, snakemake.input.data, snakemake.input.model,
        snakemake.input.best_params, Path(out.summary).parent,
        {"adapter": out.adapter, "summary": out.summary, "log": out.log, "config": out.config},
        threads=snakemake.threads, needs=method_needs(snakemake.input),
    )
