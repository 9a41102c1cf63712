"""EChorda: see __init__.py."""

from __future__ import annotations

from ..gated_lora import GatedLoraMethod, RegressionEnergyCost
from .config import Config


class EchordaMethod(GatedLoraMethod):
    name = "echorda"
    config_class = Config

    def build_cost(self, model, anat, full, max_rank):
        totals = {"kept_layers": full["kept_layers"], "kept_heads": anat.heads, "kept_ranks": max_rank}
        return RegressionEnergyCost(self.inputs.get("device_table"), self.config.target_device, self.config,
                                    totals, full)


Method = EchordaMethod
