"""wattpeft: energy- and hardware-aware parameter-efficient fine-tuning experiments."""

__version__ = "0.1.0"
