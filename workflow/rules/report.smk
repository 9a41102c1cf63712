# Stage 7, report: per-family comparison (seed 001's schema, plus n, standard error and
# provenance for every number), the top-level aggregate, and figures as PDF and PNG.
# Any one figure is a target, e.g. results/comparison/sentiment/primary_bar.png;
# results/comparison/<family>/aggregated_metrics.json runs one family alone.


rule aggregate_family:
    input:
        unpack(family_extras),
        metrics=metrics_of_family,
    output:
        "results/comparison/{family}/aggregated_metrics.json",
    log:
        "logs/report/aggregate-{family}.log",
    benchmark:
        "benchmarks/report/aggregate-{family}.tsv"
    conda:
        "../../envs/wattpeft.yaml"
    params:
        family_cfg=family_config,
        code=code_version("aggregate_family"),
    script:
        "../../scripts/aggregate_family.py"


rule aggregate:
    input:
        expand(
            "results/comparison/{family}/aggregated_metrics.json",
            family=DEFAULT_FAMILIES,
        ),
    output:
        report(
            "results/comparison/aggregated_metrics.json",
            caption="../report/aggregated_metrics.rst",
            category="Comparison",
        ),
    log:
        "logs/report/aggregate.log",
    conda:
        "../../envs/wattpeft.yaml"
    params:
        headline=CFG["report"].get("headline_family", DEFAULT_FAMILIES[0]),
        code=code_version("aggregate"),
    script:
        "../../scripts/aggregate.py"


# One rule per figure kind, so each gets its own report caption.
for kind in FIGURE_KINDS:

    rule:
        name:
            f"figure_{kind}"
        input:
            "results/comparison/{family}/aggregated_metrics.json",
        output:
            png=report(
                f"results/comparison/{{family}}/{kind}.png",
                caption=f"../report/{kind}.rst",
                category="Comparison",
                subcategory="{family}",
                labels={"family": "{family}", "figure": kind},
            ),
            pdf=f"results/comparison/{{family}}/{kind}.pdf",
        log:
            f"logs/report/{{family}}-{kind}.log",
        conda:
            "../../envs/wattpeft.yaml"
        params:
            kind=kind,
            code=code_version("figure"),
        script:
            "../../scripts/figure.py"


rule learning_curve:
    input:
        "results/runs/{run}/train_log.jsonl",
    output:
        png=report(
            "results/runs/{run}/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="Runs",
            subcategory="{run}",
            labels={"run": "{run}", "figure": "learning curve"},
        ),
        pdf="results/runs/{run}/learning_curve.pdf",
    log:
        "logs/report/learning-curve-{run}.log",
    conda:
        "../../envs/wattpeft.yaml"
    params:
        code=code_version("learning_curve"),
    script:
        "../../scripts/learning_curve.py"


# Seed documents' claims (families.<name>.claims in the config), each filled with this
# workflow's measurements and a verdict; claims.md is the README's table.
rule claims:
    input:
        expand(
            "results/comparison/{family}/aggregated_metrics.json",
            family=DEFAULT_FAMILIES,
        ),
    output:
        html=report(
            "results/comparison/claims.html",
            caption="../report/claims.rst",
            category="Claims",
        ),
        json="results/comparison/claims.json",
        md="results/comparison/claims.md",
    log:
        "logs/report/claims.log",
    conda:
        "../../envs/wattpeft.yaml"
    params:
        families=canonical({name: CFG["families"][name] for name in DEFAULT_FAMILIES}),
        code=code_version("claims"),
    script:
        "../../scripts/claims.py"
