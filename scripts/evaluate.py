"""Rule evaluate: task metrics of one export, joined with its profile, into metrics.json."""

from wattpeft.stages.evaluate import run_evaluate
from wattpeft.stages.logging import logged

with logged(snakemake):
    inp, out = snakemake.input, snakemake.output
    run_evaluate(
        snakemake.params.run_cfg, inp.config, inp.summary, inp.export, inp.data, inp.profile,
        out.metrics, out.predictions, threads=snakemake.params.measure_threads, energy_table_path=inp.energy_table,
        device_cost_path=inp.get("device_cost"),
    )
