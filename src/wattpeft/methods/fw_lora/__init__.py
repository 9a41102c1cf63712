"""FW-LoRA (seed 004): LoRA plus a Fisher-weighted shrinkage of each adapter's update.

During a warm-up of K optimiser steps, F_m = EMA of ||dL/dW_m||_F^2 for each frozen base
weight W_m, measured with hooks (methods/fisher.py: dL/dW = G^T X from layer inputs X and
output gradients G; W_m never becomes trainable). After warm-up, I_m = F_m / sum F is
frozen, the hooks are removed, and the loss adds

    lambda * sum_m (1 - I_m) * ||scaling * B_m A_m||_F^2,

with ||B A||_F^2 = sum((A A^T) * (B^T B)) from r x r Gram matrices, never forming B A.
Ranks come from the shared budget rule, exactly as LoRA's; hardened by peft's merge.
K, lambda, the EMA factor and the estimator come from the config (config.py).

Two bugs of the seed's sketch are not reproduced: it penalised ||A||^2 + ||B||^2 (not the
update B A), and it keyed every matrix by the first component of its name (so all layers
shared one importance). Here each target module has its own I_m, keyed by its full name.

config.py: `Config` (torch-free); model.py: `Method`.
"""
