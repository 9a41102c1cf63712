"""Stage entry points: one module per Snakemake stage. Each `run_*` function takes plain
arguments (so tests call it directly); `scripts/*.py` adapt Snakemake's object to it."""
