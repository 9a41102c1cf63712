"""hest_soft: see __init__.py."""

from __future__ import annotations

from torch import nn

from ..spectral import FactorisedController, SpectralLinear
from ..spectral_method import EnergyCapCost, SpectralMethod
from .config import Config


class HestSoftMethod(EnergyCapCost, SpectralMethod):
    name = "hest_soft"
    config_class = Config
    states = ("off", "int8", "fp16")
    token_wise = True
    dual_ascent = False

    def build_controller(self, modules: list[SpectralLinear], n_layers: int) -> nn.Module:
        return FactorisedController([m.in_features for m in modules], n_layers, self.config.controller_dim,
                                    max(m.rank for m in modules), n_on=2)


Method = HestSoftMethod
