"""BHSP: see __init__.py."""

from __future__ import annotations

from torch import nn

from ..spectral import StaticController, SpectralLinear
from ..spectral_method import FlopCapCost, SpectralMethod
from .config import Config


class BhspMethod(FlopCapCost, SpectralMethod):
    name = "bhsp"
    config_class = Config
    states = ("off", "fp16")
    token_wise = False
    hardening_note = ("argmax of each direction's gate; kept directions merged into the base weights "
                      "(exact: the gates are the same for every token)")

    def build_controller(self, modules: list[SpectralLinear], n_layers: int) -> nn.Module:
        return StaticController([m.rank for m in modules], n_on=1)


Method = BhspMethod
