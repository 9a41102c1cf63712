# Stage 4, hardening: the trained adapter becomes the exported inference model.


rule harden:
    input:
        unpack(run_inputs),
        adapter="results/runs/{run}/adapter",
        config="results/runs/{run}/config.json",
    output:
        directory("results/exports/{run}"),
    log:
        "logs/harden/{run}.log",
    benchmark:
        "benchmarks/harden/{run}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        code=code_version("harden"),
        method_code=run_method_code,
    script:
        "../../scripts/harden.py"
