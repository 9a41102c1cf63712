"""HEST (seeds 000/001, proposed): hierarchical energy-constrained spectral tuning.

(1) Factorised controller: token score sigmoid(W_tok x) (d x k) times layer score
sigmoid(w_layer) (L x k), mapped to per-direction logits by one shared map: O((d + L) k)
parameters, distinct gates per direction. (2) A 3-way Gumbel-softmax gate per direction and
token over {off, int8, fp16} (tau from the config). (3) Expected energy E from a per-device
J/FLOP table. (4) One global Lagrange multiplier with dual ascent once per step against
E_max = energy_ratio x TABS's mean modelled energy per sample, so HEST trains after TABS
(registry entry: after=("tabs",)). (5) Hardened by argmax: off skipped, int8 through
torch._int_mm, the rest in the device's 16-bit type, with E_max per sequence by construction.

config.py: `Config` (torch-free); model.py: `Method`.
"""
