"""HIMALAYA's parameters. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from ..spectral_config import GateConfig


@dataclass(frozen=True)
class Config(GateConfig):
    # GateConfig brings `gumbel_tau`: here the temperature of the relaxed-Bernoulli (concrete)
    # gate samples in training (Maddison et al.'s 2/3), and the refusal of `alpha`.
    core_atoms: int = param(24, lambda v: v >= 1, "must be >= 1")
    elastic_atoms: int = param(16, lambda v: v >= 1, "must be >= 1")
    # Width of the router's hidden layer: 64 gives about 43k router parameters at d = 576 with
    # 40 atoms ((d + 16) x 64 + 64 x 80 + biases).
    router_hidden: int = param(64, lambda v: v >= 1, "must be >= 1")
    task_embedding_dim: int = param(16, lambda v: v >= 1, "must be >= 1")
    # Bound on the expected number of active atoms per token (sum of gate probabilities); at
    # inference the floor(max_active_atoms) most probable atoms are on.
    max_active_atoms: float = param(3.0, lambda v: v >= 1, "must be >= 1")
    # Growth: when the trailing mean (over growth_window steps) of the inputs' cosine similarity
    # to their nearest atom drops below tau, the top residual direction enters the elastic pool.
    tau: float = param(0.8, lambda v: 0 <= v <= 1, "must be in [0, 1]")
    growth_window: int = param(200, lambda v: v >= 1, "must be >= 1")
    growth_sample_tokens: int = param(4, lambda v: v >= 1, "must be >= 1")  # per module and forward
    ring_buffer: int = param(128, lambda v: v >= 1, "must be >= 1")
    usage_decay: float = param(0.99, lambda v: 0 <= v < 1, "must be in [0, 1)")
    dictionary_bits: int = param(3, lambda v: 2 <= v <= 8, "must be in [2, 8]")
    coefficient_bits: int = param(8, lambda v: 2 <= v <= 8, "must be in [2, 8]")
    router_temperature_init: float = param(1.0, lambda v: v > 0, "must be > 0")
    router_temperature_final: float = param(0.5, lambda v: v > 0, "must be > 0")
    consolidation_steps: int = param(20, lambda v: v >= 0, "must be >= 0")
    fisher_decay: float = param(0.99, lambda v: 0 <= v < 1, "must be in [0, 1)")
    seed: int = param(0, lambda v: v >= 0, "must be >= 0")  # draws the core dictionary

    def problems(self) -> list[tuple[str, str]]:
        if self.alpha is not None:  # the update is self-normalised (||r|| = 1), never scaled
            return [("alpha", "is a LoRA scaling; himalaya's self-normalised update has none")]
        if self.max_active_atoms > self.core_atoms + self.elastic_atoms:
            return [("max_active_atoms", "must be <= core_atoms + elastic_atoms")]
        return []
