"""Rule continual_evaluate: a stream run's metrics.json (a measuring job: it times latency)."""

from wattpeft.stages.continual import run_stream_evaluate
from wattpeft.stages.logging import logged

with logged(snakemake):
    inp = snakemake.input
    run_stream_evaluate(
        snakemake.params.run_cfg, snakemake.params.eval_cfg, list(inp.data), inp.model, inp.snapshots,
        inp.matrix, inp.summary, snakemake.output.metrics,
        threads=snakemake.threads, measure_threads=snakemake.params.measure_threads,
    )
