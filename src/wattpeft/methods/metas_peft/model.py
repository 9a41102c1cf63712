"""MetaS-PEFT: see __init__.py."""

from __future__ import annotations

from ..gated_lora import GatedLoraMethod, SurrogateCost
from .config import Config


class MetasPeftMethod(GatedLoraMethod):
    name = "metas_peft"
    config_class = Config

    def build_cost(self, model, anat, full, max_rank):
        return SurrogateCost(self.inputs.get("surrogate"), self.config, full["kept_layers"], anat.heads, full)


Method = MetasPeftMethod
