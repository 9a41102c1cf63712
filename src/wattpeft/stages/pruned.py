"""A backbone cut to a configuration s, for timing it on a device: random weights from the
model's own config (exact for speed), whole blocks and attention heads physically removed,
LoRA adapters of rank kept_ranks left unmerged, weights at param_bits."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..methods.base import default_target_modules
from ..methods.pruning import block_list, remove_heads, remove_layers


class NotMeasurableHere(RuntimeError):
    """A configuration this device cannot run (its reason goes into the table)."""


def backbone_cut_to(model_dir: str | Path, s: dict[str, int], lora_targets: list[str] | None,
                    device: torch.device) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    from .common import model_source

    config = AutoConfig.from_pretrained(model_source(model_dir))
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    remove_layers(model, list(range(s["kept_layers"])))
    for block in block_list(model):
        remove_heads(model, block, list(range(s["kept_heads"])))
    model = at_bits(model.eval(), s["param_bits"], device)
    if s["kept_ranks"] > 0:
        add_lora(model, s["kept_ranks"], lora_targets or default_target_modules(model))
    return model


class TimedLoRA(nn.Module):
    """An unmerged LoRA path beside a (possibly quantised) base layer, for timing only."""

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int, rank: int, like: torch.Tensor):
        super().__init__()
        self.base_layer = base_layer
        self.lora_A = nn.Parameter(torch.randn(rank, in_features, dtype=like.dtype, device=like.device) / rank)
        self.lora_B = nn.Parameter(torch.randn(out_features, rank, dtype=like.dtype, device=like.device) / rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = x.to(self.lora_A.dtype) @ self.lora_A.T @ self.lora_B.T
        return self.base_layer(x) + low_rank.to(x.dtype)


def add_lora(model: nn.Module, rank: int, targets: list[str]) -> None:
    like = next(p for p in model.parameters() if p.is_floating_point())
    for name, module in list(model.named_modules()):
        if name.split(".")[-1] in targets and hasattr(module, "in_features"):
            parent, _, child = name.rpartition(".")
            wrapped = TimedLoRA(module, module.in_features, module.out_features, rank, like)
            setattr(model.get_submodule(parent) if parent else model, child, wrapped)


def at_bits(model: nn.Module, bits: int, device: torch.device) -> nn.Module:
    """32: fp32; 16: bf16 on a CPU (fp16 is far slower there), fp16 on a GPU; 8: int8 dynamic
    quantisation of the linear layers (CPU). Other widths are not measured on this device."""
    if bits == 32:
        return model.to(device)
    if bits == 16:
        return model.to(device, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16)
    if bits == 8 and device.type == "cpu":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    raise NotMeasurableHere(f"{bits}-bit weights are not measured on {device.type} by this stage")
