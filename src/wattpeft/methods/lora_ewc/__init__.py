"""LoRA-EWC: LoRA from peft (ranks from the shared budget rule) trained over a task stream with
online EWC (methods/ewc.py) on the LoRA parameters.

After each task: the per-sample Fisher of the LoRA parameters from the task's first
`fisher_samples` training rows, then consolidation (F <- ewc_gamma x F + F_task, anchor = the
current parameters); while training later tasks the loss adds ewc_lambda / 2 x sum F (theta -
anchor)^2, logged as `loss_ewc`. Hardening keeps the LoRA apart from the backbone (no merge:
the backbone may be 4-bit); the adapter folder holds the LoRA weights and the EWC state.

config.py: `Config` (torch-free); model.py: `Method`.
"""
