# wattpeft: energy- and hardware-aware PEFT experiments, end to end.
#   snakemake --cores all                          run the default pipeline (config.yaml)
#   snakemake --cores all --profile profiles/slurm on a SLURM cluster
#   snakemake --cores all results/comparison/sentiment/primary_bar.png   one figure
# Rules are thin: each calls a function in src/wattpeft/stages/.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config is given with --configfile (then whole, not merged
# with the default); `--config key=value` overrides apply on top of either.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/assets.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/devices.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/harden.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/continual.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
