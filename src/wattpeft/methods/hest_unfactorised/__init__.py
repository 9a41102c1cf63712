"""HEST ablation "unfactorised controller": TABS's per-layer controller (O(L x R x d)
parameters) producing HEST's 3-way logits. Everything else as HEST (methods/hest).

config.py: `Config` (torch-free); model.py: `Method`.
"""
