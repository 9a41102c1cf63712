"""Rule finetune: train one run (resumes from its last checkpoint if one exists). The job's
`gpu` resource is the number of training processes (DDP, one per GPU; 0 or unset: one)."""

from pathlib import Path

from wattpeft.stages.common import method_needs
from wattpeft.stages.finetune import run_finetune
from wattpeft.stages.logging import logged

# Guarded: with several GPUs the training processes are spawned, and a spawned process
# imports this script again as its main module; it must not train there.
if __name__ == "__main__":
    with logged(snakemake):
        out = snakemake.output
        run_finetune(
            snakemake.params.run_cfg, snakemake.input.data, snakemake.input.model,
            snakemake.input.best_params, Path(out.summary).parent,
            {"adapter": out.adapter, "summary": out.summary, "log": out.log, "config": out.config},
            threads=snakemake.threads, needs=method_needs(snakemake.input),
            processes=max(1, int(snakemake.resources.get("gpu", 0) or 0)),
        )
