"""HEST ablation "soft penalty": a fixed lambda (energy_lambda) instead of dual ascent, so
the energy term is a plain penalty. Everything else as HEST (methods/hest).

config.py: `Config` (torch-free); model.py: `Method`.
"""
