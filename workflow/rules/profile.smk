# Stage 5, profiling: energy and latency of each export on this device, in measurement
# windows (see docs/energy.md). Energy is NaN with source 'unavailable' where no counter exists.


rule profile:
    input:
        unpack(run_inputs),
        export="results/exports/{run}",
    output:
        "results/profiles/{device}/{run}.parquet",
    log:
        "logs/profile/{device}/{run}.log",
    benchmark:
        "benchmarks/profile/{device}/{run}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        profiling=canonical(CFG["profiling"]),
        code=code_version("energy", "stages/profile.py"),
    script:
        "../../scripts/profile.py"
