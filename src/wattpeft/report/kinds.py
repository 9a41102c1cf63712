"""The comparison figure kinds, by name: the Snakefile reads this list while parsing (no
matplotlib import); figures.py maps each name to its `draw_<name>` function (the spectral
kinds' functions live in spectral.py, the hardware-surrogate kinds' in hardware.py, the
continual (task-stream) kinds' in continual.py)."""

FIGURE_KINDS = ("primary_bar", "seed_spread", "latency", "energy", "metric_table",
                "method_budget_table", "importance", "delta_norm", "gate_utilisation", "spectral_table",
                "surrogate_accuracy", "hardware_table", "retained_accuracy", "accuracy_matrix", "adapter_norm")
