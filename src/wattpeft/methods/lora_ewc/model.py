"""LoRA-EWC: peft's LoRA with online EWC over a task stream (see __init__.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..continual import ContinualMethod
from ..ewc import EwcStream
from ..fw_lora.model import lora_modules, update_sq_norm
from ..lora.model import LoraMethod
from .config import Config

EXPORT_TENSORS = "lora_ewc_export.safetensors"


class LoraEwcMethod(EwcStream, ContinualMethod, LoraMethod):
    name = "lora_ewc"
    config_class = Config
    hardening_note = ("LoRA kept apart, not merged: the backbone may be a bitsandbytes 4-bit model, into which "
                      "a merge would round; the adapter as stored (LoRA weights, EWC state) is what is measured")

    def attach(self, model: nn.Module) -> nn.Module:
        model = super().attach(model)
        self.stats.update(self.ewc_stats())
        return model

    def ewc_params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: p for name, p in model.named_parameters() if "lora_" in name}

    @torch.no_grad()
    def adapter_norm(self, model: nn.Module) -> float:
        return math.sqrt(sum(float(update_sq_norm(m)) for m in lora_modules(model).values()))

    # ---------------------------------------------------------------- the adapter as stored

    def save(self, model: nn.Module, out_dir: Path) -> None:
        super().save(model, out_dir)  # peft's adapter_model.safetensors
        self.save_ewc(out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        model = super().load(base_model, adapter_dir)
        self.load_ewc(adapter_dir)
        return model

    def harden(self, model: nn.Module) -> nn.Module:
        return model.requires_grad_(False).eval()

    # ---------------------------------------------------------------- the export (a peft model)

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        from safetensors.torch import save_model

        hardened.save_pretrained(str(out_dir))  # adapter_config.json: the LoRA layout
        hardened.get_base_model().config.save_pretrained(str(out_dir))
        save_model(hardened, str(Path(out_dir) / EXPORT_TENSORS))
        return {"lora_merged": False}

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        from peft import PeftModel
        from safetensors.torch import load_model

        from ..gated_lora import model_from_config

        model = PeftModel.from_pretrained(model_from_config(export_dir, task, label_names), str(export_dir))
        load_model(model, str(Path(export_dir) / EXPORT_TENSORS), strict=True)
        return model.requires_grad_(False).eval()


Method = LoraEwcMethod

__all__ = ["LoraEwcMethod", "Method"]
