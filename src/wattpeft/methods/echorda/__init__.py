"""EChorda (seed 002 baseline): LoRA on q and v with hard-concrete gates over layers, attention
heads and LoRA ranks, trained against the energy of the expected configuration s on the
target device, from a ridge regression of log energy fitted on `n_measurements` (default
200) of that device's rows in the device table: re-fitted for every device. Hardened by
removing the closed layers, heads and ranks (methods/gated_lora.py).

config.py: `Config` (torch-free); model.py: `Method`. Needs the family's device table.
"""
