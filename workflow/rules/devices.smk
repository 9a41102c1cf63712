# Stage 2b, device profiles and the meta-surrogate (hardware-surrogate families, seed 002):
# for each family with a `devices` section, one table of its backbone's cost per
# configuration s on every device, each row labelled simulated, imported or measured
# (docs/devices.md); for a family with a `surrogate` section, the meta-surrogate trained
# on all devices but the unseen one and calibrated there, and its leave-one-device-out
# evaluation against per-device regressions.


rule device_simulate:
    input:
        model=family_model,
    output:
        "results/devices/{family}/simulated/{hw}.parquet",
    log:
        "logs/devices/{family}/simulated-{hw}.log",
    benchmark:
        "benchmarks/devices/{family}/simulated-{hw}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=family_devices,
        model_name=family_model_name,
        code=code_version("device_simulate"),
    script:
        "../../scripts/device_simulate.py"


rule device_import:
    input:
        model=family_model,
        csv=imported_csv,
    output:
        "results/devices/{family}/imported/{hw}.parquet",
    log:
        "logs/devices/{family}/imported-{hw}.log",
    benchmark:
        "benchmarks/devices/{family}/imported-{hw}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=family_devices,
        model_name=family_model_name,
        code=code_version("device_import"),
    script:
        "../../scripts/device_import.py"


# This machine's rows, through the energy meter: a measuring job (it holds the whole host).
rule device_measure:
    input:
        model=family_model,
    output:
        f"results/devices/{{family}}/measured/{PROFILE_DEVICE}.parquet",
    log:
        "logs/devices/{family}/measured.log",
    benchmark:
        "benchmarks/devices/{family}/measured.tsv"
    threads: WHOLE_HOST
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=measure_settings,
        model_name=family_model_name,
        profiling=measure_window,
        code=code_version("device_measure"),
    script:
        "../../scripts/device_measure.py"


rule device_table:
    input:
        device_table_parts,
    output:
        "results/devices/{family}/table.parquet",
    log:
        "logs/devices/{family}/table.log",
    benchmark:
        "benchmarks/devices/{family}/table.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        code=code_version("device_table"),
    script:
        "../../scripts/device_table.py"


rule surrogate:
    input:
        table="results/devices/{family}/table.parquet",
        model=family_model,
    output:
        directory("results/surrogate/{family}/store"),
    log:
        "logs/surrogate/{family}/train.log",
    benchmark:
        "benchmarks/surrogate/{family}/train.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=family_devices,
        surrogate=family_surrogate,
        model_name=family_model_name,
        code=code_version("surrogate"),
    script:
        "../../scripts/surrogate.py"


rule surrogate_evaluation:
    input:
        table="results/devices/{family}/table.parquet",
        model=family_model,
    output:
        "results/surrogate/{family}/evaluation.parquet",
    log:
        "logs/surrogate/{family}/evaluation.log",
    benchmark:
        "benchmarks/surrogate/{family}/evaluation.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=family_devices,
        surrogate=family_surrogate,
        model_name=family_model_name,
        code=code_version("surrogate_evaluation"),
    script:
        "../../scripts/surrogate_evaluation.py"


# An export's cost on the family's unseen device (simulated: the roofline's prediction for
# the configuration read from the exported model); evaluation copies it into metrics.json.
rule device_cost:
    input:
        unpack(run_inputs),
        export="results/exports/{run}",
        summary="results/runs/{run}/train_summary.json",
        surrogate_evaluation=run_surrogate_evaluation,
    output:
        "results/runs/{run}/device_cost.json",
    log:
        "logs/devices/cost-{run}.log",
    benchmark:
        "benchmarks/device_cost/{run}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        devices=run_family_devices,
        surrogate=run_family_surrogate,
        model_name=run_family_model_name,
        code=code_version("device_cost"),
    script:
        "../../scripts/device_cost.py"
