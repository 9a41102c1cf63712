"""DiGASE (seed 002 baseline): LoRA on q and v with hard-concrete gates over whole layers and
LoRA ranks (no head gates: depth and rank only), trained against an analytic cost, the
FLOPs of the expected configuration s relative to the full model; no device involved.
Hardened by removing the closed layers and ranks (methods/gated_lora.py).

config.py: `Config` (torch-free); model.py: `Method`.
"""
