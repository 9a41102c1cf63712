"""DiGASE: see __init__.py."""

from __future__ import annotations

from ..gated_lora import FlopsCost, GatedLoraMethod, adapted_modules, model_shape
from .config import Config


class DigaseMethod(GatedLoraMethod):
    name = "digase"
    config_class = Config
    gate_heads = False

    def build_cost(self, model, anat, full, max_rank):
        return FlopsCost(model_shape(model, adapted_modules(self, model)), full, self.config.lambda_flops)


Method = DigaseMethod
