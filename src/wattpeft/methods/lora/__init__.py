"""LoRA from peft: low-rank updates B A on the target linear layers; hardened by merging.

config.py: `Config` (torch-free); model.py: `Method`. Per-module ranks come from the
shared budget rule (methods/budget.py) and reach peft as `LoraConfig(r=base,
rank_pattern={escaped module name: base + 1})`.
"""
