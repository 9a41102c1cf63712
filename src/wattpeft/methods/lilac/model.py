"""LILAC: shared dictionary atoms, per-module coefficients, online EWC, 8-bit storage (see __init__.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..base import count_params, target_linears
from ..budget import Allocation
from ..continual import Batch, ContinualMethod
from ..ewc import EwcStream
from ..spectral_method import task_head
from .config import Config
from .layer import DICTS_NAME, Dictionaries, LilacLinear, dequantise, quantise, round_to_storage

ADAPTER_TENSORS = "lilac_adapter.safetensors"
ADAPTER_META = "lilac_adapter.json"
EXPORT_TENSORS = "lilac_export.safetensors"
EXPORT_META = "lilac_export.json"
HEAD_PREFIX = "task_head."
QUANT_SUFFIXES = (".q", ".scale")


def adapter_dtype(model: nn.Module) -> torch.dtype:
    """The backbone's float dtype; float32 over a quantised (e.g. 4-bit, uint8-packed) one."""
    dtype = next(model.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32


def wrap(model: nn.Module, names: list[str], atoms: int, rank: int, scaling: float,
         dropout: float = 0.0) -> tuple[Dictionaries, dict[str, LilacLinear]]:
    """Put LILAC on the modules `names` of `model` (model order), its dictionaries on the model."""
    bases = {name: model.get_submodule(name) for name in names}
    widths = {w for m in bases.values() for w in (m.in_features, m.out_features)}
    device = next(model.parameters()).device
    dicts = Dictionaries(widths, atoms, device=device, dtype=adapter_dtype(model))
    model.add_module(DICTS_NAME, dicts)
    modules = {}
    for name, base in bases.items():
        modules[name] = LilacLinear(base, dicts, rank, scaling, dropout)
        model.set_submodule(name, modules[name])
    return dicts, modules


class LilacMethod(EwcStream, ContinualMethod):
    name = "lilac"
    config_class = Config
    sized_by_budget = False
    hardening_note = ("LILAC kept apart from the (possibly 4-bit) backbone, at its stored 8-bit values (int8 "
                      "dictionaries and coefficients, one scale per row), dequantised to the backbone's dtype")

    @property
    def scaling(self) -> float:
        rank = self.config.coefficient_rank
        return (2.0 * rank if self.config.alpha is None else self.config.alpha) / rank

    def attach(self, model: nn.Module) -> nn.Module:
        layers = target_linears(model, self.target_names(model))
        if not layers:
            raise ValueError(f"{self.name}: no linear layer matches target_modules {self.target_names(model)}")
        backbone = count_params(model)
        names = [name for name, _ in layers]
        model = self._wrap(model, names)
        rank, atoms = self.config.coefficient_rank, self.config.atoms
        coefficients = sum(m.lilac_C.numel() + m.lilac_E.numel() for m in self.modules.values())
        adapter = coefficients + count_params(self.dictionaries)
        # Ranks as the config sets them; one rank costs its C and E rows (2 K), the dictionaries,
        # owned by no rank, come on top: planned = what the config builds.
        allocation = Allocation({n: rank for n in names}, {n: 2 * atoms for n in names}, backbone,
                                self.budget_pct, "config")
        self.stats = {
            **self.budget_stats(allocation, adapter_params=adapter, effective_params=adapter,
                                trainable_params=count_params(model, trainable_only=True)),
            "planned_adapter_params": adapter,
            "target_modules": self.target_names(model),
            "atoms": atoms,
            "dictionary_widths": sorted(int(k[1:]) for k in self.dictionaries.atoms),
            "dictionary_params": count_params(self.dictionaries),
            "coefficient_params": coefficients,
            "storage_bits": self.config.storage_bits,
            **self.ewc_stats(),
        }
        return model

    def _wrap(self, model: nn.Module, names: list[str]) -> nn.Module:
        model.requires_grad_(False)
        if self.task == "classification":  # the task head trains whole, as peft's modules_to_save
            for param in task_head(model).values():
                param.requires_grad_(True)
        self.dictionaries, self.modules = wrap(model, names, self.config.atoms, self.config.coefficient_rank,
                                               self.scaling, self.config.dropout)
        return model

    def adapter_tensors(self) -> dict[str, nn.Parameter]:
        """Dictionaries and coefficients, by their names in the model."""
        tensors = {f"{DICTS_NAME}.atoms.{key}": p for key, p in self.dictionaries.atoms.items()}
        for name, module in self.modules.items():
            tensors.update({f"{name}.lilac_C": module.lilac_C, f"{name}.lilac_E": module.lilac_E})
        return tensors

    def ewc_params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return self.adapter_tensors()

    def end_task(self, model: nn.Module, task_index: int, per_sample_batches: Iterable[Batch]) -> None:
        self._round_to_storage()  # the anchor is the adapter as it will be stored
        super().end_task(model, task_index, per_sample_batches)

    @torch.no_grad()
    def adapter_norm(self, model: nn.Module) -> float:
        return math.sqrt(sum(float(m.update_sq_norm()) for m in self.modules.values()))

    def _round_to_storage(self) -> None:
        if self.config.storage_bits == 8:
            round_to_storage(self.adapter_tensors())

    # ---------------------------------------------------------------- the adapter as stored

    def save(self, model: nn.Module, out_dir: Path) -> None:
        """int8 dictionaries and coefficients with per-row scales (storage_bits 8), the task head in
        float32, the EWC state. The model is rounded to the stored values first (see __init__)."""
        from safetensors.torch import save_file

        self._round_to_storage()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, p in self.adapter_tensors().items():
            if self.config.storage_bits == 8:
                tensors.update(zip((name + s for s in QUANT_SUFFIXES), quantise(p)))
            else:
                tensors[name] = p.detach().float()
        tensors.update({f"{HEAD_PREFIX}{k}": p.detach() for k, p in task_head(model).items()})
        save_file({k: t.contiguous().cpu() for k, t in tensors.items()}, str(out_dir / ADAPTER_TENSORS))
        meta = {"method": self.name, "targets": list(self.modules), "storage_bits": self.config.storage_bits,
                "stats": self.stats}
        (out_dir / ADAPTER_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.save_ewc(out_dir)

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        from safetensors.torch import load_file

        meta = json.loads((Path(adapter_dir) / ADAPTER_META).read_text())
        model = self._wrap(base_model, meta["targets"])
        tensors = load_file(str(Path(adapter_dir) / ADAPTER_TENSORS))
        with torch.no_grad():
            for name, p in self.adapter_tensors().items():
                stored = dequantise(*(tensors[name + s] for s in QUANT_SUFFIXES)) if name + ".q" in tensors \
                    else tensors[name]
                p.copy_(stored.to(p.dtype))
            for key, p in task_head(model).items():
                p.copy_(tensors[f"{HEAD_PREFIX}{key}"])
        self.stats = meta["stats"]
        self.load_ewc(adapter_dir)
        return model

    def harden(self, model: nn.Module) -> nn.Module:
        return model.requires_grad_(False).eval()

    # ---------------------------------------------------------------- the export

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        from safetensors.torch import save_model

        layout = {"method": self.name, "targets": list(self.modules), "atoms": self.config.atoms,
                  "rank": self.config.coefficient_rank, "scaling": self.scaling,
                  "dtype": str(adapter_dtype(hardened)).removeprefix("torch.")}
        hardened.config.save_pretrained(str(out_dir))
        save_model(hardened, str(Path(out_dir) / EXPORT_TENSORS))
        (Path(out_dir) / EXPORT_META).write_text(json.dumps(layout, indent=2, sort_keys=True))
        return {"lilac_atoms": layout["atoms"], "lilac_rank": layout["rank"],
                "lilac_modules": len(layout["targets"])}

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        from safetensors.torch import load_model

        from ..gated_lora import model_from_config

        layout = json.loads((Path(export_dir) / EXPORT_META).read_text())
        model = model_from_config(export_dir, task, label_names).to(getattr(torch, layout["dtype"]))
        wrap(model, layout["targets"], layout["atoms"], layout["rank"], layout["scaling"])
        load_model(model, str(Path(export_dir) / EXPORT_TENSORS), strict=True)
        return model.requires_grad_(False).eval()


Method = LilacMethod

__all__ = ["LilacMethod", "Method", "adapter_dtype", "wrap"]
