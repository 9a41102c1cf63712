"""Rule claims: every family's seed claims, filled with measurements and a verdict."""

from pathlib import Path

from wattpeft.stages.logging import logged
from wattpeft.stages.report import run_claims

with logged(snakemake):
    # write_claims names its files claims.{json,md,html}: the rule's outputs, side by side.
    run_claims(list(snakemake.input), snakemake.params.families, Path(snakemake.output.html).parent)
