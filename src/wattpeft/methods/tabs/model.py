"""TABS: see __init__.py."""

from __future__ import annotations

from torch import nn

from ..spectral import PerModuleController, SpectralLinear
from ..spectral_method import FlopCapCost, SpectralMethod
from .config import Config


class TabsMethod(FlopCapCost, SpectralMethod):
    name = "tabs"
    config_class = Config
    states = ("off", "fp16")
    token_wise = True

    def build_controller(self, modules: list[SpectralLinear], n_layers: int) -> nn.Module:
        return PerModuleController([m.in_features for m in modules], [m.rank for m in modules], n_on=1)


Method = TabsMethod
