# Stage 3, fine-tuning: an optuna search per (family, method, budget), then one run per seed
# with the best parameters. A killed run resumes from its last checkpoint.


rule search:
    input:
        unpack(group_inputs),
        unpack(group_needs),
    output:
        "results/search/{group}/best_params.json",
    log:
        "logs/search/{group}.log",
    benchmark:
        "benchmarks/search/{group}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        run_cfg=search_config,
        code=code_version("search"),
        method_code=group_method_code,
    script:
        "../../scripts/search.py"


rule finetune:
    input:
        unpack(run_inputs),
        unpack(run_needs),
        best_params=best_params_of_run,
    output:
        adapter=directory("results/runs/{run}/adapter"),
        summary="results/runs/{run}/train_summary.json",
        log="results/runs/{run}/train_log.jsonl",
        config="results/runs/{run}/config.json",
    log:
        "logs/finetune/{run}.log",
    benchmark:
        "benchmarks/finetune/{run}.tsv"
    wildcard_constraints:
        run=ONE_DATASET_RUN,
    conda:
        "../../envs/wattpeft.yaml"
    params:
        run_cfg=run_view("train"),
        code=code_version("finetune"),
        method_code=run_method_code,
    script:
        "../../scripts/finetune.py"


# Optional W&B mirror of a finished run (wandb.mode offline/online, mode full): its own
# rule, so that logging settings never retrain anything. Local files stay the truth.
rule wandb_mirror:
    input:
        log="results/runs/{run}/train_log.jsonl",
        summary="results/runs/{run}/train_summary.json",
    output:
        "results/runs/{run}/wandb_mirror.json",
    log:
        "logs/wandb/{run}.log",
    conda:
        "../../envs/wattpeft.yaml"
    params:
        run_cfg=run_view("log"),
        code=code_version("wandb_mirror"),
    script:
        "../../scripts/wandb_mirror.py"
