"""HEST ablation "fp16-only": HEST without the precision choice, 2-way gates {off, fp16}.
Everything else as HEST (methods/hest).

config.py: `Config` (torch-free); model.py: `Method`.
"""
