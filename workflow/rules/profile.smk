# Stage 5, profiling: energy and latency of each export on the device that runs the job, in
# measurement windows (see docs/energy.md). Energy is NaN with source 'unavailable' where no
# counter exists. {device} is profiling.device as configured; with "auto" each job names the
# device it found inside the profile. Measuring jobs run alone (the `measure` resource).


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
        code=code_version("profile"),
    script:
        "../../scripts/profile.py"
