"""Hardening: load the trained adapter onto a fresh backbone and export the inference
model (for LoRA/AdaLoRA: merged weights), with the tokenizer and an export card.

The card also records ‖ΔW_m‖_F, the Frobenius norm of (hardened - base) weight, of every
linear layer the hardening changed: the same for every method that merges into the base
weights, with no method-specific code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils.io import atomic_path, read_json, write_json
from .common import model_source, open_run_data, pin_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

# Wrappers a method's model may put around the backbone (peft's PeftModel), stripped so that
# module names read as in the base model: bert.encoder.layer.3.attention.self.query.
WRAPPER_PREFIXES = ("base_model.model.",)
WRAPPER_SUFFIXES = (".base_layer",)


def base_module_name(name: str) -> str:
    """`name` as the base model names the module (wrapper prefixes and suffixes removed)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.removeprefix(prefix)
    for suffix in WRAPPER_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy (on the CPU, in the weights' own dtype) of every linear layer's weight, keyed by
    its base-model name. Take it before loading an adapter: peft may change `model` in place."""
    from torch import nn

    return {
        base_module_name(name): module.weight.detach().to("cpu", copy=True)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    }


def delta_norms(base_weights: dict[str, torch.Tensor], hardened: nn.Module) -> dict[str, float]:
    """{base-model module name: ‖W_hardened - W_base‖_F} (float32) for every linear layer of
    `hardened` whose weight differs from `base_weights`; unchanged layers are left out.

    Compared one layer at a time, so only one layer's difference is ever held in memory.
    A layer whose shape changed (not a merge into the base weight) has no such norm."""
    import torch
    from torch import nn

    norms: dict[str, float] = {}
    with torch.no_grad():
        for name, module in hardened.named_modules():
            key = base_module_name(name)
            base = base_weights.get(key)
            if not isinstance(module, nn.Linear) or base is None or module.weight.shape != base.shape:
                continue
            weight = module.weight.detach().to("cpu", torch.float32)
            norm = float(torch.linalg.matrix_norm(weight - base.float(), ord="fro"))
            if norm > 0.0:
                norms[key] = norm
    return norms


def run_harden(run_config_path: Path, adapter_dir: Path, data_dir: Path, model_dir: Path, out_dir: Path, threads: int = 1) -> dict:
    from ..evaluation.modelled_energy import backbone_linear_flops_per_token
    from ..methods import get_method
    from ..methods.base import count_params

    pin_threads(threads)
    run_cfg = read_json(run_config_path)
    data = open_run_data(data_dir)
    tokenizer, base = data.load_model(model_source(model_dir))
    method = get_method(run_cfg["method"])(run_cfg["method_params"], run_cfg["budget"], data.task, 1)
    base_weights = linear_weights(base)  # before load: peft wraps (and merges into) base in place
    backbone_flops = backbone_linear_flops_per_token(base)
    hardened = method.harden(method.load(base, Path(adapter_dir)))
    norms = delta_norms(base_weights, hardened)
    del base_weights
    card: dict[str, Any] = {
        "run_id": run_cfg["run_id"],
        "method": run_cfg["method"],  # loading goes through this method (methods.load_export)
        "task": data.task,
        "label_names": data.label_names,
        "params": count_params(hardened),
        "dtype": str(next(hardened.parameters()).dtype).replace("torch.", ""),
        "hardening": method.hardening_note,
        "backbone_flops_per_token": backbone_flops,
        "delta_norms": norms,
        "delta_norms_note": "‖W_hardened - W_base‖_F in float32 per linear layer the hardening changed "
                            "(base-model module names; unchanged layers are absent)",
    }
    with atomic_path(out_dir) as tmp:
        card.update(method.export(hardened, tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / "export.json", card)
    return card
