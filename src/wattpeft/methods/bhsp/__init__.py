"""BHSP (seeds 000/001 baseline): spectral adapter with one learned gate per (layer, direction),
the same for every token, under TABS's per-example FLOP cap (a penalty).

Initialised from a truncated SVD of each target weight (methods/spectral.py); 2-way gates
{off, fp16}. Hardened by argmax: kept directions are merged into the base weights, which is
exact because the gates do not depend on the token, so the export is a plain model.

config.py: `Config` (torch-free); model.py: `Method`.
"""
