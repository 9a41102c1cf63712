"""Squared gradient norms of frozen linear weights, ||dL/dW||_F^2, without making W trainable.

For a linear layer y = x W^T + b over N tokens, dL/dW = G^T X, with X (N x in) the layer's
inputs and G (N x out) the gradients of the loss with respect to its outputs. A forward
hook keeps X; a hook on the output tensor receives G during backward. W never needs
`requires_grad`, so the backward pass skips W's own gradient, as LoRA does.

For an adapter-wrapped layer the hook sits on the wrapper (peft's LoRA layer, whose
`base_layer` is the frozen linear): its output is base output + adapter output, so its
output gradient is G, and unlike the bare base output it needs a gradient even where
the layer's input does not (the first layer's inputs come from frozen embeddings).

Three ways to turn (X, G) into ||G^T X||_F^2; `cost(form, n, d_in, d_out)` gives each one's
multiply-adds:

* `direct`: form G^T X (N x in x out), as costly as the weight gradient LoRA saves;
* `gram`: sum((G G^T) * (X X^T)), exact, N^2 x (in + out): cheaper when N < in*out/(in+out);
* `probes`: ||G^T X v||^2 averaged over p Gaussian vectors v (Hutchinson), unbiased,
  p x N x (in + out); its relative standard deviation is at most sqrt(2 / p) per batch
  and shrinks as estimates are averaged over steps.

Estimators: `exact` takes the cheaper of direct and gram per layer and batch; `probes`
always probes; `auto` takes the gram form when it is cheaper than probing (N <= p, short
batches) and probes otherwise, so that warm-up costs a few percent, not a third, of a
step (bench/fw_lora_overhead.py measures both, and the error against the exact value).

Hooks count each forward that needs a gradient once; under gradient checkpointing the
forward runs twice and would be counted twice (not used by this trainer).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .params import FISHER_ESTIMATORS as ESTIMATORS
FORMS = ("direct", "gram", "probes")


def cost(form: str, n: int, d_in: int, d_out: int, probes: int = 16) -> int:
    """Multiply-adds one batch of `n` tokens costs in `form`."""
    if form == "direct":
        return n * d_in * d_out
    if form == "gram":
        return n * n * (d_in + d_out)
    if form == "probes":
        return probes * n * (d_in + d_out)
    raise ValueError(f"unknown form {form!r}; forms: {FORMS}")


def choose_form(estimator: str, n: int, d_in: int, d_out: int, probes: int) -> str:
    if estimator == "exact":
        candidates = ("direct", "gram")
    elif estimator == "auto":
        candidates = ("gram", "probes")
    elif estimator == "probes":
        return "probes"
    else:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; estimators: {ESTIMATORS}")
    return min(candidates, key=lambda form: cost(form, n, d_in, d_out, probes))


def squared_grad_norm(x: torch.Tensor, g: torch.Tensor, form: str, probes: int = 16,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """||G^T X||_F^2 for inputs x (..., in) and output gradients g (..., out), in float32."""
    x = x.reshape(-1, x.shape[-1]).float()
    g = g.reshape(-1, g.shape[-1]).float()
    if form == "direct":
        return (g.T @ x).square().sum()
    if form == "gram":
        return ((g @ g.T) * (x @ x.T)).sum()
    if form == "probes":
        v = torch.randn(x.shape[1], probes, generator=generator, dtype=x.dtype).to(x.device)
        return (g.T @ (x @ v)).square().sum() / probes
    raise ValueError(f"unknown form {form!r}; forms: {FORMS}")


def base_linear(module: nn.Module) -> nn.Linear:
    """The frozen linear behind `module`: its `base_layer` when it wraps one, else itself."""
    linear = getattr(module, "base_layer", module)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected an nn.Linear or a wrapper with one as base_layer, got {type(linear).__name__}")
    return linear


class GradNormHooks:
    """Accumulates ||dL/dW||_F^2 of the frozen linear weights behind named modules (nn.Linear
    layers or wrappers of one, see `base_linear`) over backward passes.

    `take()` returns the sums since the previous `take()` (one optimiser step's worth) and
    resets them; `remove()` detaches the hooks. `forms` counts which form each batch used.
    """

    def __init__(self, layers: dict[str, nn.Module], estimator: str = "auto", probes: int = 16,
                 seed: int = 0):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown Fisher estimator {estimator!r}; estimators: {ESTIMATORS}")
        self.layers = layers
        self.estimator = estimator
        self.probes = probes
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: dict[str, float] = {name: 0.0 for name in layers}
        self.forms: dict[str, int] = {form: 0 for form in FORMS}
        self._handles = [layer.register_forward_hook(self._forward_hook(name)) for name, layer in layers.items()]

    def _forward_hook(self, name: str):
        layer = base_linear(self.layers[name])

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not (torch.is_grad_enabled() and output.requires_grad):
                return  # evaluation, or nothing upstream needs a gradient
            x = args[0].detach()
            n = x.numel() // x.shape[-1]
            form = choose_form(self.estimator, n, layer.in_features, layer.out_features, self.probes)

            def on_grad(g: torch.Tensor) -> None:
                value = squared_grad_norm(x, g.detach(), form, self.probes, self.generator)
                self.pending[name] += float(value)
                self.forms[form] += 1

            output.register_hook(on_grad)

        return hook

    def take(self) -> dict[str, float]:
        taken, self.pending = self.pending, {name: 0.0 for name in self.layers}
        return taken

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def active(self) -> bool:
        return bool(self._handles)


def frozen_linears(modules: Iterable[tuple[str, nn.Module]]) -> dict[str, nn.Module]:
    """(name, module) pairs as a dict, refusing any whose linear weight is trainable."""
    layers = {}
    for name, module in modules:
        if base_linear(module).weight.requires_grad:
            raise ValueError(f"{name}: its weight is trainable; the Fisher proxy is for frozen weights")
        layers[name] = module
    return layers
