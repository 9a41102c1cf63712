# Stage 6, evaluation: task metrics of the export on the test split, joined with its profile.


rule evaluate:
    input:
        unpack(run_inputs),
        unpack(run_extras),
        export="results/exports/{run}",
        config="results/runs/{run}/config.json",
        summary="results/runs/{run}/train_summary.json",
        profile=f"results/profiles/{PROFILE_DEVICE}/{{run}}.parquet",
        energy_table=ENERGY_TABLE,
    output:
        metrics="results/runs/{run}/metrics.json",
        predictions="results/runs/{run}/predictions.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    threads: WHOLE_HOST  # it times latency: a measuring job
    wildcard_constraints:
        run=ONE_DATASET_RUN,
    conda:
        "../../envs/wattpeft.yaml"
    params:
        measure_threads=MEASURE_THREADS,
        run_cfg=run_view("evaluate"),
        code=code_version("evaluate"),
    script:
        "../../scripts/evaluate.py"
