# Stage 5, profiling: energy and latency of each export on the device that runs the job, in
# measurement windows (see docs/energy.md). Energy is NaN with source 'unavailable' where no
# counter exists. {device} is profiling.device as configured; with "auto" each job names the
# device it found inside the profile. Measuring jobs run alone (they hold WHOLE_HOST).


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
    threads: WHOLE_HOST
    conda:
        "../../envs/wattpeft.yaml"
    params:
        profiling=canonical(CFG["profiling"]),
        code=code_version("profile"),
    script:
        "../../scripts/profile.py"


# The device's joules per FLOP of int8 and 16-bit GEMMs, behind the spectral methods' energy
# model (energy/table.py): measured where the device has an energy counter, else documented
# defaults, labelled `default` wherever they are used. A measuring job: it runs alone.
rule energy_table:
    output:
        "results/profiles/{device}/energy_table.json",
    log:
        "logs/profile/{device}/energy_table.log",
    benchmark:
        "benchmarks/profile/{device}/energy_table.tsv"
    threads: WHOLE_HOST
    conda:
        "../../envs/wattpeft.yaml"
    params:
        measure_threads=MEASURE_THREADS,
        code=code_version("energy_table"),
    script:
        "../../scripts/energy_table.py"
