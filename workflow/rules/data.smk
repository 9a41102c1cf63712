# Stage 2, data: raw rows -> task type and fixed-seed splits -> tokenised parquet + manifest.


rule tokenise:
    input:
        unpack(dataset_inputs),
        model="resources/models/{model}",
    output:
        directory("results/data/{dataset}/{model}"),
    log:
        "logs/data/{dataset}-{model}.log",
    benchmark:
        "benchmarks/data/{dataset}-{model}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        spec=dataset_spec,
        code=code_version("tokenise", "assets_registry.json"),
    script:
        "../../scripts/tokenise.py"
