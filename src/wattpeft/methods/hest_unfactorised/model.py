"""hest_unfactorised: see __init__.py."""

from __future__ import annotations

from torch import nn

from ..spectral import PerModuleController, SpectralLinear
from ..spectral_method import EnergyCapCost, SpectralMethod
from .config import Config


class HestUnfactorisedMethod(EnergyCapCost, SpectralMethod):
    name = "hest_unfactorised"
    config_class = Config
    states = ("off", "int8", "fp16")
    token_wise = True

    def build_controller(self, modules: list[SpectralLinear], n_layers: int) -> nn.Module:
        return PerModuleController([m.in_features for m in modules], [m.rank for m in modules], n_on=2)


Method = HestUnfactorisedMethod
