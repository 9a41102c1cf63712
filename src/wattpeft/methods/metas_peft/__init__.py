"""MetaS-PEFT (seed 002, proposed): LoRA on q and v with hard-concrete gates over layers,
attention heads and LoRA ranks, trained against lambda E + mu L + nu P of the expected
configuration s on the target device, predicted by the meta-surrogate calibrated on 5 of
that device's measurements; the gradient flows through the frozen surrogate into the gates
and no device is called during training. Hardened by removing the closed layers, heads and
ranks (methods/gated_lora.py).

config.py: `Config` (torch-free); model.py: `Method`. Needs the family's meta-surrogate.
"""
