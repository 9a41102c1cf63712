"""Physical removal of transformer blocks and attention heads (BERT- and Llama-style models):
what a pruned configuration really computes, not a mask. Used by hardening of gated methods
and by the device-profile stage, which times backbones cut to a configuration s."""

from __future__ import annotations

import torch
from torch import nn

# (query, key, value, output projection) attribute paths inside one block, per architecture.
ATTENTION_PATHS = {
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    "llama": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
}


def architecture(model: nn.Module) -> str:
    model_type = getattr(model.config, "model_type", "")
    if model_type in ("bert", "roberta", "xlm-roberta"):
        return "bert"
    if model_type == "llama":
        return "llama"
    raise ValueError(f"pruning supports BERT- and Llama-style models, not model_type {model_type!r}")


def block_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (the first ModuleList of num_hidden_layers)."""
    layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return module
    raise ValueError(f"no list of {layers} blocks in {type(model).__name__}")


def head_dim(model: nn.Module) -> int:
    config = model.config
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def heads_per_block(model: nn.Module) -> list[int]:
    """Attention heads each block computes: its query projection's rows over the head size."""
    query_path = ATTENTION_PATHS[architecture(model)][0]
    return [_module(block, query_path).weight.shape[0] // head_dim(model) for block in block_list(model)]


def remove_layers(model: nn.Module, keep: list[int]) -> None:
    """Keep only the blocks at `keep` (in order); the config and Llama's layer indices follow."""
    blocks = block_list(model)
    kept = [blocks[i] for i in sorted(keep)]
    for index in reversed(range(len(blocks))):
        del blocks[index]
    blocks.extend(kept)
    model.config.num_hidden_layers = len(kept)
    for index, block in enumerate(kept):
        attention = getattr(block, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index  # the KV cache is indexed by position in the list
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = [model.config.layer_types[i] for i in sorted(keep)]


def remove_heads(model: nn.Module, block: nn.Module, keep: list[int], scale: torch.Tensor | None = None) -> None:
    """Keep only attention heads `keep` of `block`: rows of the query, key and value
    projections and columns of the output projection are cut out. `scale` (one value per kept
    head) is folded into the output projection's columns. Multi-head attention only: with
    grouped key/value heads, a query head cannot leave alone."""
    config = model.config
    if getattr(config, "num_key_value_heads", config.num_attention_heads) != config.num_attention_heads:
        raise ValueError("removing heads needs multi-head attention; this model groups its key/value heads (GQA)")
    dim = head_dim(model)
    rows = torch.cat([torch.arange(h * dim, (h + 1) * dim) for h in sorted(keep)]) if keep else torch.zeros(0, dtype=torch.long)
    *inputs, output = (_module(block, path) for path in ATTENTION_PATHS[architecture(model)])
    for linear in inputs:
        _keep_out_features(linear, rows)
    column_scale = None if scale is None else scale.repeat_interleave(dim)
    _keep_in_features(output, rows, column_scale)
    _set_head_count(block, len(keep))


def _module(root: nn.Module, path: str) -> nn.Module:
    for name in path.split("."):
        root = getattr(root, name)
    return getattr(root, "base_layer", root)  # an adapter wraps the linear it adapts


@torch.no_grad()
def _keep_out_features(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight[rows].clone(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias[rows].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = len(rows)


@torch.no_grad()
def _keep_in_features(linear: nn.Linear, columns: torch.Tensor, scale: torch.Tensor | None) -> None:
    weight = linear.weight[:, columns].clone()
    if scale is not None:
        weight *= scale.to(weight.dtype)
    linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
    linear.in_features = len(columns)


def _set_head_count(block: nn.Module, heads: int) -> None:
    """Attributes that count heads (BERT: num_attention_heads, all_head_size); both
    architectures reshape with -1 heads, so these are bookkeeping."""
    for module in block.modules():
        if hasattr(module, "num_attention_heads") and hasattr(module, "attention_head_size"):
            module.num_attention_heads = heads
            module.all_head_size = heads * module.attention_head_size
        if hasattr(module, "num_heads") and isinstance(module.num_heads, int):
            module.num_heads = heads
