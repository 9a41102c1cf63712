"""The method side of the spectral adapters (spectral.py): attach, cost terms, save/load,
harden and export, shared by BHSP, TABS, HEST and HEST's ablations.

A subclass (methods/<name>/model.py) sets its `states`, whether its gates are per token,
its controller (`build_controller`) and its cost term (one of the two mixins below).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..energy.table import check_table, default_table, state_j_per_flop
from .base import TASK_HEADS, AdapterMethod, count_params, target_linears
from .spectral import GATES_NAME, GateSet, HardenedSpectralLinear, SpectralLinear, layer_index, merge_static

ADAPTER_TENSORS = "spectral_adapter.safetensors"
ADAPTER_META = "spectral_adapter.json"
EXPORT_TENSORS = "spectral_export.safetensors"
EXPORT_META = "spectral_export.json"
HEAD_PREFIX = "task_head."  # the classification head's tensors in the saved adapter


class SpectralMethod(AdapterMethod):
    states: tuple[str, ...] = ("off", "fp16")
    token_wise = True  # False: one gate per direction for all tokens (merged at hardening)
    hardening_note = ("argmax gates per token; off directions skipped; int8 directions through torch._int_mm "
                      "(per-channel weights, per-token activations); the rest in the device's 16-bit type")

    # ---------------------------------------------------------------- what subclasses set
    @abstractmethod
    def build_controller(self, modules: list[SpectralLinear], n_layers: int) -> nn.Module:
        """The module that scores the directions (spectral.py's controllers)."""

    def cost_loss(self, gates: GateSet) -> torch.Tensor | None:
        """The method's cost term from this forward pass's expected FLOPs/energy."""
        return None

    def e_max(self) -> float | None:
        """The hardened model's per-sequence energy cap (J), if the method has one."""
        return None

    # ---------------------------------------------------------------- energy table
    def energy_table(self) -> dict[str, Any]:
        table = self.inputs.get("energy_table")
        return check_table(table, "energy table") if table is not None else default_table("no table was given")

    # ---------------------------------------------------------------- attach
    def attach(self, model: nn.Module) -> nn.Module:
        allocation = self.allocate(model)
        layout = {name: {"rank": allocation.ranks[name]} for name, _ in target_linears(model, self.target_names(model))}
        model = self._wrap(model, layout, self.energy_table(), from_svd=True)
        adapter = sum(m.du.numel() + m.dv.numel() for m in self.modules.values())
        self.stats = {
            **self.budget_stats(allocation, adapter_params=adapter, effective_params=adapter,
                                trainable_params=count_params(model, trainable_only=True),
                                controller_params=count_params(self.gates.controller)),
            "target_modules": self.target_names(model),
            "gate_states": list(self.states),
            "token_wise_gates": self.token_wise,
            "energy_table": {k: self.table[k] for k in ("source", "reference", "j_per_flop")},
            "adapter_flops_per_token_max": sum(m.rank * m.flops_dir for m in self.modules.values()),
        }
        return model

    def _wrap(self, model: nn.Module, layout: dict[str, dict[str, int]], table: dict[str, Any],
              from_svd: bool) -> nn.Module:
        """Freeze `model` and put a SpectralLinear on each module of `layout` ({name: {rank}})."""
        for param in model.parameters():
            param.requires_grad_(False)
        if self.task == "classification":  # the task head trains whole, as peft's modules_to_save
            for param in task_head(model).values():
                param.requires_grad_(True)
        self.table = table
        # Model order, not the layout's (a saved layout's keys come back sorted: layers.10
        # before layers.2), so that each module gets back its own index and controller slice.
        names = [name for name, _ in model.named_modules() if name in layout]
        if len(names) != len(layout):
            raise ValueError(f"{self.name}: the model has no module {sorted(set(layout) - set(names))[:3]}")
        n_layers = 1 + max(layer_index(n) for n in names)
        gates = GateSet(self.states, self.config.gumbel_tau, state_j_per_flop(table, self.states), n_layers)
        modules = {}
        for index, name in enumerate(names):
            base = model.get_submodule(name)
            module = SpectralLinear(base, layout[name]["rank"], index, layer_index(name), gates,
                                    dropout=self.config.dropout, from_svd=from_svd)
            model.set_submodule(name, module)
            modules[name] = module
        gates.controller = self.build_controller(list(modules.values()), n_layers).to(next(model.parameters()).device)
        gates.set_cap_shares(list(modules.values()))
        gates.install(model)
        self.modules, self.gates = modules, gates
        return model

    # ---------------------------------------------------------------- training
    def extra_loss(self, model: nn.Module, step: int) -> torch.Tensor | None:
        return self.cost_loss(self.gates)

    def validation_record(self, model: nn.Module) -> dict[str, float]:
        totals = self.gates.totals
        record = {}
        if totals["sequences"]:
            record = {"modelled_adapter_j_per_sample": totals["energy_j"] / totals["sequences"],
                      "adapter_flops_on_share": totals["flops"] / max(totals["full_flops"], 1e-12)}
        self.gates.reset_totals()
        return record

    # ---------------------------------------------------------------- save / load
    def _layout(self) -> dict[str, dict[str, int]]:
        return {name: {"rank": m.rank} for name, m in self.modules.items()}

    def save(self, model: nn.Module, out_dir: Path) -> None:
        from safetensors.torch import save_file

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tensors = {f"{name}.{key}": t.detach().contiguous().cpu()
                   for name, m in self.modules.items() for key, t in (("u", m.u), ("s", m.s), ("v", m.v),
                                                                      ("du", m.du), ("dv", m.dv))}
        tensors.update({f"{GATES_NAME}.{k}": t.detach().contiguous().cpu()
                        for k, t in self.gates.controller.state_dict().items()})
        tensors.update({f"{HEAD_PREFIX}{k}": t.detach().contiguous().cpu() for k, t in task_head(model).items()})
        save_file(tensors, str(Path(out_dir) / ADAPTER_TENSORS))
        meta = {"method": self.name, "layout": self._layout(), "energy_table": self.table,
                "e_max_j": self.e_max(), "states": list(self.states), "stats": self.stats}
        (Path(out_dir) / ADAPTER_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        from safetensors.torch import load_file

        meta = json.loads((Path(adapter_dir) / ADAPTER_META).read_text())
        model = self._wrap(base_model, meta["layout"], meta["energy_table"], from_svd=False)
        self.saved_e_max = meta["e_max_j"]
        self.stats = meta["stats"]
        tensors = load_file(str(Path(adapter_dir) / ADAPTER_TENSORS))
        with torch.no_grad():
            for name, module in self.modules.items():
                for key in ("u", "s", "v", "du", "dv"):
                    getattr(module, key).copy_(tensors[f"{name}.{key}"])
        prefix = f"{GATES_NAME}."
        self.gates.controller.load_state_dict({k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)})
        with torch.no_grad():
            for key, param in task_head(model).items():
                param.copy_(tensors[f"{HEAD_PREFIX}{key}"])
        return model

    # ---------------------------------------------------------------- harden / export
    def harden(self, model: nn.Module) -> nn.Module:
        model.eval()
        if not self.token_wise:
            return self._merge_static(model)
        for name, module in self.modules.items():
            model.set_submodule(name, HardenedSpectralLinear.from_trained(module))
        # A loaded adapter carries the cap it trained with; a freshly trained one computes it.
        self.gates.e_max = self.saved_e_max if hasattr(self, "saved_e_max") else self.e_max()
        return model

    def _merge_static(self, model: nn.Module) -> nn.Module:
        """Gates that are the same for every token: merge the kept directions into the base
        weights; the export is then a plain Hugging Face model with no adapter overhead."""
        kept = {}
        with torch.no_grad():
            for name, module in self.modules.items():
                x = torch.zeros(1, module.in_features, device=module.u.device)
                on = self.gates.logits(x, module)[0].argmax(-1) != 0
                kept[name] = int(on.sum())
                model.set_submodule(name, merge_static(module, on))
        self.gates.uninstall(model)
        self.stats["kept_directions"] = kept
        return model

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        if not self.token_wise:
            return {**super().export(hardened, out_dir), "kept_directions": self.stats.get("kept_directions")}
        from safetensors.torch import save_file

        # The backbone as a plain Hugging Face model (base weights under their own names) ...
        backbone, extra = {}, {}
        for key, tensor in hardened.state_dict().items():
            if key.startswith(f"{GATES_NAME}.") or (".base_layer." not in key and self._is_adapter_key(key)):
                extra[key] = tensor.detach().contiguous().cpu()
            else:
                backbone[key.replace(".base_layer.", ".")] = tensor
        hardened.save_pretrained(str(out_dir), state_dict=backbone)
        # ... plus the hardened adapter beside it, reloaded through the registry.
        save_file(extra, str(Path(out_dir) / EXPORT_TENSORS))
        meta = {"method": self.name, "method_params": config_params(self.config), "budget": self.budget_pct,
                "layout": self._layout(), "energy_table": self.table, "e_max_j": self.gates.e_max,
                "states": list(self.states)}
        (Path(out_dir) / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return {"e_max_j": self.gates.e_max, "energy_table_source": self.table["source"]}

    def _is_adapter_key(self, key: str) -> bool:
        return any(key.startswith(f"{name}.") for name in self.modules)

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        meta_path = Path(export_dir) / EXPORT_META
        model = super().load_export(export_dir, task, label_names)
        if not meta_path.exists():  # static gates: merged, a plain model
            return model
        from safetensors.torch import load_file

        meta = json.loads(meta_path.read_text())
        method = cls(meta["method_params"], meta["budget"], task, 1)
        model = method._wrap(model, meta["layout"], meta["energy_table"], from_svd=False)
        for name, module in method.modules.items():
            model.set_submodule(name, HardenedSpectralLinear(module.base_layer, module.rank, module.index,
                                                             module.layer, module.gates, module.flops_dir,
                                                             module.cap_share))
        tensors = load_file(str(Path(export_dir) / EXPORT_TENSORS))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        expected = set(tensors)
        if unexpected or any(k in expected for k in missing):
            raise ValueError(f"{export_dir}: {EXPORT_TENSORS} does not fit the model: unexpected {unexpected[:3]}")
        method.gates.e_max = meta["e_max_j"]
        model.eval()
        return model

    # ---------------------------------------------------------------- inference stats
    @classmethod
    def reset_inference_stats(cls, model: nn.Module) -> None:
        gates = getattr(model, GATES_NAME, None)
        if gates is not None:
            gates.reset_totals()

    @classmethod
    def inference_stats(cls, model: nn.Module) -> dict[str, Any]:
        gates = getattr(model, GATES_NAME, None)
        if gates is None or not gates.totals["sequences"]:
            return {}
        totals = gates.totals
        n, tokens = totals["sequences"], max(totals["tokens"], 1e-12)
        return {
            "modelled_adapter_j_per_sample": totals["energy_j"] / n,
            "modelled_adapter_j_max_sample": totals["max_energy_j"],
            "e_max_j": gates.e_max,
            "adapter_flops_per_token": totals["flops"] / tokens,
            "adapter_flops_per_token_max": totals["full_flops"] / tokens,
            "controller_params": count_params(gates.controller),
            "gate_utilisation": gates.utilisation(),
        }


def task_head(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of the model's task head (base.TASK_HEADS; none for a causal LM)."""
    return {name: param for name, param in model.named_parameters() if name.split(".")[0] in TASK_HEADS}


def config_params(config) -> dict[str, Any]:
    """A config's values as method params (unset optional fields left out)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if v is not None}


# ---------------------------------------------------------------- cost terms


class FlopCapCost:
    """TABS (and BHSP): a per-example FLOP cap on the adapter path, enforced by a penalty:
    cap_penalty x mean over examples of relu(F / (flop_cap_ratio x F_all_on) - 1), with F the
    expected adapter FLOPs of the example. The cap scales with the example's length, so it
    does not bound energy per sample: long inputs overshoot any fixed envelope."""

    def cost_loss(self, gates: GateSet) -> torch.Tensor | None:
        if not torch.is_tensor(gates.flops):
            return None
        on_share = gates.flops / gates.full_flops.clamp(min=1e-12)
        self._on_share = float(on_share.detach().mean())
        return self.config.cap_penalty * torch.relu(on_share / self.config.flop_cap_ratio - 1.0).mean()

    def log_fields(self) -> dict[str, float]:
        share = getattr(self, "_on_share", None)
        return {} if share is None else {"adapter_flops_on_share": share}


class EnergyCapCost:
    """HEST: one global Lagrange multiplier on the expected energy per sequence,
    loss = task + lambda (E - E_max) / E_max, and (with `dual_ascent`) once per optimiser step
    lambda <- max(0, lambda + alpha (E - E_max) / E_max) from that step's batches. Dividing by
    E_max makes lambda and alpha unit-free (the seed's values are for that scale).
    E_max = energy_ratio x the mean modelled adapter energy per sample of the run named by
    `energy_reference` (same family, budget and seed), read from its train summary."""

    energy_reference = "tabs"  # must match the registry entry's `after`
    dual_ascent = True

    def e_max(self) -> float | None:
        if not hasattr(self, "_e_max"):
            summary = self.inputs.get("runs", {}).get(self.energy_reference)
            if summary is None:
                raise ValueError(f"{self.name}: E_max = energy_ratio x {self.energy_reference}'s mean energy, "
                                 f"but no {self.energy_reference} run was given (registry entry: after)")
            reference = (summary.get("validation") or {}).get("modelled_adapter_j_per_sample")
            if not isinstance(reference, (int, float)) or reference <= 0:
                raise ValueError(f"{self.name}: {self.energy_reference}'s train summary has no positive "
                                 f"validation.modelled_adapter_j_per_sample (got {reference!r})")
            self._e_max = self.config.energy_ratio * float(reference)
            self.lam = self.config.energy_lambda
            self._pending: list[float] = []
            self._last_energy = None
        return self._e_max

    def attach(self, model: nn.Module) -> nn.Module:
        e_max = self.e_max()
        model = super().attach(model)
        self.stats.update(e_max_j=e_max, energy_ratio=self.config.energy_ratio, dual_ascent=self.dual_ascent,
                          energy_reference=self.energy_reference)
        return model

    def cost_loss(self, gates: GateSet) -> torch.Tensor | None:
        if not torch.is_tensor(gates.energy):
            return None
        relative = gates.energy.mean() / self.e_max() - 1.0
        self._pending.append(float(relative.detach()))
        self._last_energy = float(gates.energy.detach().mean())
        return self.lam * relative

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        if self.dual_ascent and self._pending:
            violation = sum(self._pending) / len(self._pending)
            self.lam = max(0.0, self.lam + self.config.dual_lr * violation)
        self._pending = []

    def log_fields(self) -> dict[str, float]:
        fields = {"lambda": self.lam, "e_max_j": self.e_max()}
        if self._last_energy is not None:
            fields["energy_j"] = self._last_energy
        return fields

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {"lambda": self.lam, "pending": list(self._pending), "last_energy": self._last_energy,
                "stats": copy.deepcopy(self.stats)}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.e_max()
        self.lam, self._pending, self._last_energy = state["lambda"], list(state["pending"]), state["last_energy"]
        self.stats.update(copy.deepcopy(state["stats"]))

    def save(self, model: nn.Module, out_dir: Path) -> None:
        self.stats["final_lambda"] = self.lam
        super().save(model, out_dir)
