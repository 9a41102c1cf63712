# Continual (stream) families, seed 003: a family with a `stream` of tasks instead of one
# dataset. Its runs train over the stream (continual_finetune), are scored on every task after
# every task (accuracy_matrix), and get their metrics.json from that one matrix, the stored
# adapter and a side-by-side latency measurement (continual_evaluate). Any family with a
# stream takes this path; none is special (rules match its runs by STREAM_RUN).


rule continual_finetune:
    input:
        unpack(stream_inputs),
    output:
        snapshots=directory("results/runs/{run}/snapshots"),
        summary="results/runs/{run}/train_summary.json",
        log="results/runs/{run}/train_log.jsonl",
        config="results/runs/{run}/config.json",
    log:
        "logs/finetune/{run}.log",
    benchmark:
        "benchmarks/finetune/{run}.tsv"
    wildcard_constraints:
        run=STREAM_RUN,
    conda:
        "../../envs/wattpeft.yaml"
    params:
        run_cfg=run_view("train"),
        code=code_version("continual_finetune"),
        method_code=run_method_code,
    script:
        "../../scripts/continual_finetune.py"


rule accuracy_matrix:
    input:
        unpack(stream_inputs),
        snapshots="results/runs/{run}/snapshots",
    output:
        "results/runs/{run}/accuracy_matrix.json",
    log:
        "logs/evaluate/{run}-accuracy-matrix.log",
    benchmark:
        "benchmarks/evaluate/{run}-accuracy-matrix.tsv"
    wildcard_constraints:
        run=STREAM_RUN,
    # (T + 1) x T scoring passes: the longest job of a stream, and no timing in it, so it
    # takes every core it may (a cluster profile's set-threads overrides this).
    threads: WHOLE_HOST
    conda:
        "../../envs/wattpeft.yaml"
    params:
        run_cfg=run_view("train"),
        eval_cfg=run_view("evaluate"),
        code=code_version("accuracy_matrix"),
        method_code=run_method_code,
    script:
        "../../scripts/accuracy_matrix.py"


rule continual_evaluate:
    input:
        unpack(stream_inputs),
        snapshots="results/runs/{run}/snapshots",
        matrix="results/runs/{run}/accuracy_matrix.json",
        summary="results/runs/{run}/train_summary.json",
    output:
        metrics="results/runs/{run}/metrics.json",
    log:
        "logs/evaluate/{run}.log",
    benchmark:
        "benchmarks/evaluate/{run}.tsv"
    wildcard_constraints:
        run=STREAM_RUN,
    threads: WHOLE_HOST  # it times latency: a measuring job
    conda:
        "../../envs/wattpeft.yaml"
    params:
        measure_threads=MEASURE_THREADS,
        run_cfg=run_view("train"),
        eval_cfg=run_view("evaluate"),
        code=code_version("continual_evaluate"),
        method_code=run_method_code,
    script:
        "../../scripts/continual_evaluate.py"
