"""LILAC's layers: the dictionaries (one per feature width, shared by all modules of that
width), the adapted linear layer with its own coefficients, and the 8-bit round trip."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..spectral import quantise_rows

DICTS_NAME = "lilac_dictionaries"  # where the dictionaries hang in the model


def width_key(width: int) -> str:
    return f"w{width}"


class Dictionaries(nn.Module):
    """One `atoms` x w dictionary per width w; atoms (rows) drawn at random with unit norm."""

    def __init__(self, widths: set[int], atoms: int, device=None, dtype=None):
        super().__init__()
        self.atoms = nn.ParameterDict()
        for width in sorted(widths):
            d = torch.randn(atoms, width, device=device)
            self.atoms[width_key(width)] = nn.Parameter((d / d.norm(dim=1, keepdim=True)).to(dtype))

    def of(self, width: int) -> nn.Parameter:
        return self.atoms[width_key(width)]


class LilacLinear(nn.Module):
    """base_layer(x) + scaling x dropout(x) A^T B^T with A = C D_in (rank x in) and
    B = (E D_out)^T (out x rank); C and E (rank x atoms) are the module's own."""

    def __init__(self, base_layer: nn.Linear, dictionaries: Dictionaries, rank: int, scaling: float,
                 dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        self.rank, self.scaling = int(rank), float(scaling)
        ref = dictionaries.of(base_layer.in_features)
        atoms = ref.shape[0]
        # C's std 1/sqrt(3 K) gives A rows of about LoRA's (kaiming-uniform) norm; E = 0: no update yet.
        self.lilac_C = nn.Parameter(torch.randn(rank, atoms, device=ref.device).to(ref.dtype) / math.sqrt(3 * atoms))
        self.lilac_E = nn.Parameter(torch.zeros(rank, atoms, device=ref.device, dtype=ref.dtype))
        self.lilac_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._dicts = (dictionaries,)  # a reference, not a submodule: shared, hung on the model once

    def extra_repr(self) -> str:
        return f"rank={self.rank}, atoms={self.lilac_C.shape[1]}, scaling={self.scaling:g}"

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A: rank x in, B: out x rank)."""
        dicts, base = self._dicts[0], self.base_layer
        return self.lilac_C @ dicts.of(base.in_features), (self.lilac_E @ dicts.of(base.out_features)).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)  # the frozen path (possibly a bitsandbytes Linear4bit)
        a, b = self.factors()
        low = F.linear(self.lilac_dropout(x).to(a.dtype), a)
        return out + (F.linear(low, b) * self.scaling).to(out.dtype)

    def update_sq_norm(self) -> torch.Tensor:
        """||scaling B A||_F^2 = scaling^2 sum((A A^T) * (B^T B)): B A is never formed."""
        a, b = self.factors()
        return self.scaling ** 2 * ((a @ a.T) * (b.T @ b)).sum()


# ---------------------------------------------------------------- 8-bit storage


def quantise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 q, float32 scale per row), symmetric: t ~ q * scale[:, None]."""
    return quantise_rows(t.detach())


def dequantise(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def round_trip_bound(scale: torch.Tensor) -> torch.Tensor:
    """Per row: |t - dequantise(*quantise(t))| <= scale / 2 (rounding to the nearest step; no
    value is clipped, the largest maps to +-127 exactly)."""
    return scale / 2


@torch.no_grad()
def round_to_storage(params: dict[str, nn.Parameter]) -> None:
    """Each parameter replaced by its 8-bit round trip (idempotent: q is unchanged after one)."""
    for p in params.values():
        p.copy_(dequantise(*quantise(p)).to(p.dtype))


__all__ = ["DICTS_NAME", "Dictionaries", "LilacLinear", "dequantise", "quantise", "round_to_storage",
           "round_trip_bound", "width_key"]
