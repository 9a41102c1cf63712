"""Rule continual_finetune: train one run over its family's stream of tasks (resumes at the
task and step where a killed job stopped)."""

from pathlib import Path

from wattpeft.stages.continual import run_stream_finetune
from wattpeft.stages.logging import logged

with logged(snakemake):
    out = snakemake.output
    run_stream_finetune(
        snakemake.params.run_cfg, list(snakemake.input.data), snakemake.input.model, Path(out.summary).parent,
        {"snapshots": out.snapshots, "summary": out.summary, "log": out.log, "config": out.config},
        threads=snakemake.threads,
    )
