"""Hard-concrete gates (Louizos, Welling and Kingma 2018, "Learning sparse neural networks
through L0 regularization"; the same distribution as CoFiPruning's structured pruning).

One `HardConcreteGate` holds a tensor of gates of any shape, e.g. (layers,) to skip whole
blocks, (layers, heads) for attention heads, (modules, rank) for LoRA ranks. Every gated
method uses this one module, so sampling, the L0 penalty, the expected counts and the
hardening rule are the same everywhere.

The distribution. With u ~ U(0, 1), temperature beta and stretch (l, r):

    s = sigmoid((log u - log(1 - u) + log_alpha) / beta)      # binary concrete in (0, 1)
    z = clamp(s * (r - l) + l, 0, 1)                           # stretched, then clamped

Because (l, r) = (-0.1, 1.1) reaches past [0, 1], z is exactly 0 or exactly 1 with positive
probability (a gate can really switch a structure off in training), and z is
differentiable in log_alpha wherever 0 < z < 1 (the reparameterisation trick).

P(z > 0) = P(s > -l / (r - l)) = sigmoid(log_alpha - beta * log(-l / r)) in closed form:
`expected_open()`. It is differentiable, so the L0 penalty (its sum) and the expected
kept counts of layers, heads and ranks (the surrogate's inputs s) are built from it.

Evaluation (module in eval mode) uses Louizos et al.'s deterministic gate
clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1): no noise, no temperature.

Hardening rule, used everywhere (`hard_mask`): a gate is kept iff its deterministic gate
is > 0, i.e. sigmoid(log_alpha) > -l / (r - l), i.e. log_alpha > -log(r / -l)
(= -log 11 = -2.398 for the default stretch). This is exactly the set of gates that are
non-zero in eval, so a hardened model (kept structures at their deterministic gate values,
the rest removed) computes what the eval-mode model computes: hardening changes no
accuracy. Note that it is not the rule expected_open() > 0.5 (log_alpha > beta * log(-l/r)
= -1.599 by default): a gate with log_alpha in (-2.398, -1.599] is kept although it is
open in fewer than half of the training samples.

Initialisation: log_alpha = `init_log_alpha` (default 3.0) for every gate, so that gates
start open: the deterministic gate is exactly 1 (it is for any log_alpha >=
`fully_open_log_alpha()` = log((1 - l) / (r - 1)) = log 11 = 2.398 by default),
P(z > 0) = sigmoid(3.0 + 1.599) = 0.990, and a training sample is exactly 1 with
probability sigmoid(3.0 - 1.599) = 0.80, so about a fifth of the samples fall inside
(0, 1) and carry a gradient from the first step. The gated model starts as the ungated one.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

TEMPERATURE = 2.0 / 3.0  # beta
STRETCH = (-0.1, 1.1)  # (l, r)
INIT_LOG_ALPHA = 3.0
_EPS = 1e-6  # u is drawn in [eps, 1 - eps]: log u and log(1 - u) stay finite


def keep_threshold(stretch: tuple[float, float] = STRETCH) -> float:
    """The hardening threshold: a gate is kept iff log_alpha > keep_threshold(), i.e. its
    deterministic gate sigmoid(log_alpha) * (r - l) + l is > 0 (threshold -log(r / -l))."""
    low, high = stretch
    return -math.log(high / -low)


def fully_open_log_alpha(stretch: tuple[float, float] = STRETCH) -> float:
    """log_alpha at or above which the deterministic gate is exactly 1
    (sigmoid(log_alpha) * (r - l) + l >= 1, i.e. log_alpha >= log((1 - l) / (r - 1)))."""
    low, high = stretch
    return math.log((1.0 - low) / (high - 1.0))


class HardConcreteGate(nn.Module):
    """A tensor of hard-concrete gates of shape `shape`, parameterised by `log_alpha`.

    `forward()` gives the gate values: a reparameterised sample in training mode, the
    deterministic gate in eval mode. See the module docstring for the formulas, the
    initialisation and the hardening rule.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        *,
        temperature: float = TEMPERATURE,
        stretch: tuple[float, float] = STRETCH,
        init_log_alpha: float = INIT_LOG_ALPHA,
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in stretch)
        if not low < 0.0 < 1.0 < high:
            raise ValueError(f"stretch (l, r) must satisfy l < 0 < 1 < r, got {stretch}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
        self.shape = torch.Size(shape)
        self.temperature = float(temperature)
        self.low, self.high = low, high
        self.log_alpha = nn.Parameter(torch.full(self.shape, float(init_log_alpha)))

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.shape)}, temperature={self.temperature:.4g}, "
                f"stretch=({self.low}, {self.high})")

    def _stretch(self, s: torch.Tensor) -> torch.Tensor:
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised sample z (differentiable in log_alpha where 0 < z < 1)."""
        u = torch.rand(self.shape, generator=generator, device=self.log_alpha.device)
        u = u.clamp(_EPS, 1.0 - _EPS)
        noise = torch.log(u) - torch.log1p(-u)
        return self._stretch(torch.sigmoid((noise + self.log_alpha) / self.temperature))

    def deterministic(self) -> torch.Tensor:
        """clamp(sigmoid(log_alpha) * (r - l) + l, 0, 1): the eval-mode gate."""
        return self._stretch(torch.sigmoid(self.log_alpha))

    def forward(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gate values, shape `shape`: a sample in training mode, deterministic in eval mode."""
        return self.sample(generator) if self.training else self.deterministic()

    def expected_open(self) -> torch.Tensor:
        """P(z > 0) = sigmoid(log_alpha - beta * log(-l / r)) per gate, differentiable."""
        return torch.sigmoid(self.log_alpha - self.temperature * math.log(-self.low / self.high))

    def l0_penalty(self) -> torch.Tensor:
        """Expected number of open gates: expected_open().sum() (a differentiable scalar)."""
        return self.expected_open().sum()

    def expected_kept(self, dim: int | Sequence[int] | None = None) -> torch.Tensor:
        """Expected open gates summed over `dim` (all dims when None), differentiable: the
        "expected kept" counts that a cost model takes as input."""
        p = self.expected_open()
        return p.sum() if dim is None else p.sum(dim=dim)

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """Bool tensor of the gates kept after hardening: deterministic gate > 0."""
        return self.deterministic() > 0.0

    def kept_count(self, dim: int | Sequence[int] | None = None) -> torch.Tensor:
        """Gates kept after hardening, summed over `dim` (all dims when None): an int64
        tensor, e.g. kept heads per layer with shape (layers, heads) and dim=1."""
        mask = self.hard_mask().long()
        return mask.sum() if dim is None else mask.sum(dim=dim)
