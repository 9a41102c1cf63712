"""HIMALAYA: see __init__.py. The six parts, in code:

1. Two-tier dictionary: layer.Bank (`core`, a fixed seeded buffer; `elastic`, trainable),
   nearest atoms by exact cosine search (layer.nearest_atoms).
2. Self-normalising per-token update on square weights: layer.HimalayaLinear.forward,
   layer.Bank.update_direction; non-square targets refused here (`square_targets`).
3. Budgeted elastic growth: `after_optimizer_step` -> `_observe` (ring buffer of residuals,
   similarity history) and `_grow` (top singular vector replaces the least-used elastic atom).
4. Gradient-only Fisher consolidation before an eviction: `consolidate`.
5. Quantised storage: layer.store / layer.restore (3-bit packed dictionary, 8-bit router) in
   `save` / `load`; the forward pass uses the stored values throughout (layer.fake_quantise).
6. Router shared by all layers, task embedding, annealed temperature, bounded gates:
   layer.Router, layer.gate_probabilities, `_temperature`.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from ..base import count_params, target_linears
from ..budget import Allocation
from ..continual import Batch, ContinualMethod
from ..ewc import GradientFisher
from ..gated_lora import HEAD_PREFIX, model_from_config
from ..pruning import architecture
from ..spectral_method import config_params, task_head
from .config import Config
from .layer import Bank, HimalayaLinear, nearest_atoms, residual, restore, store

BANK_NAME = "himalaya_bank"  # where the Bank hangs in the model
ADAPTER_TENSORS = "himalaya_adapter.safetensors"
ADAPTER_META = "himalaya_adapter.json"
EXPORT_TENSORS = "himalaya_export.safetensors"
EXPORT_META = "himalaya_export.json"
# The square projections among the architectures' defaults (k/v are narrower under grouped-query
# attention, the MLP's are not square).
DEFAULT_TARGETS = {"bert": ["query", "key", "value", "attention.output.dense"], "llama": ["q_proj", "o_proj"]}
_TINY = 1e-12


def square_targets(model: nn.Module, names: list[str], method: str) -> list[tuple[str, nn.Module]]:
    """The target linears, all square and of one width d (the dictionary is shared)."""
    layers = target_linears(model, names)
    if not layers:
        raise ValueError(f"{method}: no linear layer matches target_modules {names}")
    for name, module in layers:
        if module.in_features != module.out_features:
            raise ValueError(
                f"{method}: target module {name} is {module.in_features} -> {module.out_features}, not square; "
                "the update r r^T / sqrt(d) needs d_in == d_out. Leave it out of target_modules."
            )
    widths = sorted({module.in_features for _, module in layers})
    if len(widths) > 1:
        raise ValueError(f"{method}: target modules have widths {widths}; the shared dictionary needs one width")
    return layers


def wrap(model: nn.Module, targets: list[str], config: Config, n_tasks: int, method: str = "himalaya") -> Bank:
    """Freeze `model`, wrap its target modules and hang one Bank on it."""
    layers = square_targets(model, targets, method)
    model.requires_grad_(False)
    bank = Bank(layers[0][1].in_features, config, n_tasks).to(next(model.parameters()).device)
    for name, module in layers:
        model.set_submodule(name, HimalayaLinear(module, bank, config.dropout))
    model.add_module(BANK_NAME, bank)
    return bank


def even_costs(names: list[str], total: int) -> dict[str, int]:
    """`total` parameters charged to `names` as evenly as integers allow (the dictionary and the
    router are shared by every module)."""
    share, extra = divmod(total, len(names))
    return {name: share + (i < extra) for i, name in enumerate(names)}


def fisher_weighted_coefficients(core: torch.Tensor, atom: torch.Tensor, weight: torch.Tensor,
                                 steps: int) -> torch.Tensor:
    """Coefficients c with core^T c ~ atom, each coordinate weighted by its Fisher `weight`: from
    the plain least-squares solution, `steps` gradient steps of the weighted projection; their
    fixed point is the closed form c* = (core W core^T)^+ core W atom, W = diag(weight)."""
    core, atom = core.double().cpu(), atom.double().cpu()
    c = torch.linalg.lstsq(core.T, atom[:, None]).solution[:, 0]
    w = weight.double().cpu()
    w = w / w.mean() if float(w.mean()) > _TINY else torch.ones_like(w)
    gram, target = (core * w) @ core.T, (core * w) @ atom
    lr = 1.0 / float(torch.linalg.eigvalsh(gram).max().clamp(min=_TINY))
    for _ in range(steps):
        c = c + lr * (target - gram @ c)
    return c.float()


class HimalayaMethod(ContinualMethod):
    name = "himalaya"
    config_class = Config
    sized_by_budget = False  # its size is its config: atoms, router width
    hardening_note = ("dictionary (3-bit) and router (8-bit) as stored, kept apart from the (possibly 4-bit) "
                      "backbone; gates fixed to the top floor(max_active_atoms) atoms per token")

    def target_names(self, model: nn.Module) -> list[str]:
        return list(self.config.target_modules or DEFAULT_TARGETS[architecture(model)])

    # ---------------------------------------------------------------- attach
    def attach(self, model: nn.Module) -> nn.Module:
        backbone = count_params(model)
        names = [name for name, _ in square_targets(model, self.target_names(model), self.name)]
        self._wrap(model, names, self.n_tasks)
        config, bank = self.config, self.bank
        self.usage = torch.zeros(config.elastic_atoms)  # EMA of each elastic atom's gate probability
        self.ring = torch.zeros(config.ring_buffer, bank.d)
        self.ring_count = 0
        self.history: list[float] = []  # each step's mean similarity to the nearest atom
        self.fisher = GradientFisher(config.fisher_decay)
        self.growth_events = self.steps_done = 0
        adapter = count_params(bank)  # the elastic pool and the router; the core is a fixed buffer
        allocation = Allocation({n: 1 for n in names}, even_costs(names, adapter), backbone, self.budget_pct, "config")
        # The router decides gates but is counted as adapter parameters: it is the adapter's own
        # coefficient generator, not a controller beside an update (controller_params 0).
        self.stats = {
            **self.budget_stats(allocation, adapter_params=adapter, effective_params=adapter,
                                trainable_params=count_params(model, trainable_only=True)),
            "target_modules": self.target_names(model),
            "router_params": count_params(bank.router), "elastic_params": bank.elastic.numel(),
            "core_atoms": config.core_atoms, "elastic_atoms": config.elastic_atoms, "width": bank.d,
            "growth_events": 0,
        }
        return model

    def _wrap(self, model: nn.Module, names: list[str], n_tasks: int) -> None:
        self.bank = wrap(model, names, self.config, n_tasks, self.name)
        self.bank.task = self.current_task
        self.targets = names
        if self.task == "classification":  # the task head trains whole, as peft's modules_to_save
            for param in task_head(model).values():
                param.requires_grad_(True)

    # ---------------------------------------------------------------- tasks
    def begin_task(self, model: nn.Module, task_index: int) -> None:
        super().begin_task(model, task_index)
        self._bank_of(model).task = task_index
        # Growth reads this task's residuals only: no activation of an earlier task is kept.
        self.ring.zero_()
        self.ring_count, self.history = 0, []

    def set_task(self, model: nn.Module, task_index: int) -> None:
        super().set_task(model, task_index)
        self._bank_of(model).task = task_index

    def end_task(self, model: nn.Module, task_index: int, per_sample_batches: Iterable[Batch]) -> None:
        """Nothing: consolidation is replay-free and gradient-only (the Fisher follows the
        training gradients; atoms are consolidated when evicted), so task rows are not read."""

    @staticmethod
    def _bank_of(model: nn.Module) -> Bank:
        return model.get_submodule(BANK_NAME)

    # ---------------------------------------------------------------- training
    def _temperature(self) -> float:
        """T, linear from router_temperature_init to router_temperature_final over total_steps."""
        done = min(self.steps_done / max(self.total_steps, 1), 1.0)
        return self.config.router_temperature_init + done * (self.config.router_temperature_final
                                                             - self.config.router_temperature_init)

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        self.fisher.update(dict(self.bank.named_parameters()))
        self._observe()
        self.steps_done += 1
        self.bank.temperature = self._temperature()
        window = self.config.growth_window
        if len(self.history) >= window and sum(self.history[-window:]) / window < self.config.tau:
            self._grow()

    @torch.no_grad()
    def _observe(self) -> None:
        """Fold this step's sampled inputs into usage, the similarity history and the ring buffer."""
        pending, self.bank.pending = self.bank.pending, []
        if not pending:
            return
        tokens = torch.cat([x for x, _ in pending])
        pi = torch.stack([p for _, p in pending]).mean(0).cpu()
        decay = self.config.usage_decay
        self.usage = decay * self.usage + (1 - decay) * pi[self.config.core_atoms:]
        atoms = self.bank.atoms()
        _, similarity = nearest_atoms(tokens, atoms)
        self.history = (self.history + [float(similarity.mean())])[-self.config.growth_window:]
        rows = residual(tokens, atoms).cpu()[-len(self.ring):]  # older rows would be overwritten
        self.ring[(self.ring_count + torch.arange(len(rows))) % len(self.ring)] = rows
        self.ring_count += len(rows)

    @torch.no_grad()
    def _grow(self) -> None:
        """Promote the top singular vector of the residual buffer into the least-used elastic slot
        (consolidated first); the atom count never changes. Growth then waits a full window."""
        filled = self.ring[: min(self.ring_count, len(self.ring))].clone()
        self.history, self.ring_count = [], 0
        self.ring.zero_()
        if float(filled.norm()) < 1e-6:  # the atoms already span the inputs: nothing new
            return
        direction = torch.linalg.svd(filled, full_matrices=False).Vh[0]
        slot = int(torch.argmin(self.usage))
        self.consolidate(slot)
        self.evict(slot, direction)

    def _fisher(self, key: str, like: torch.Tensor) -> torch.Tensor:
        return self.fisher.value.get(key, torch.zeros_like(like, dtype=torch.float32))

    def importance(self, atom: int) -> float:
        """Fisher importance of atom `atom` (core first, then elastic): the summed Fisher of its
        router rows (gate logit, coefficient) and, for an elastic atom, of the atom itself."""
        out, n = self.bank.router.out, self.bank.n_atoms
        total = sum(float(self._fisher(f"router.out.{k}", getattr(out, k))[[atom, n + atom]].sum())
                    for k in ("weight", "bias"))
        elastic = atom - self.config.core_atoms
        if elastic >= 0:
            total += float(self._fisher("elastic", self.bank.elastic)[elastic].sum())
        return total

    @torch.no_grad()
    def consolidate(self, slot: int) -> float:
        """Move elastic atom `slot`'s knowledge into the core before it is evicted: its core
        coefficients c (Fisher-weighted least squares, `fisher_weighted_coefficients`) turn its
        router coefficient row into core coefficient rows, out[core j] += lam c_j out[atom],
        with lam = F_atom / (F_atom + mean F_core j): an atom that mattered little moves little,
        core rows that matter are disturbed less. Data-free: only the running Fisher is read.
        Returns lam."""
        bank, n, core_atoms = self.bank, self.bank.n_atoms, self.config.core_atoms
        atom = core_atoms + slot
        weight = self._fisher("elastic", bank.elastic)[slot]
        c = fisher_weighted_coefficients(bank.core, bank.elastic[slot], weight, self.config.consolidation_steps)
        own = self.importance(atom)
        core = sum(self.importance(j) for j in range(core_atoms)) / core_atoms
        lam = own / (own + core) if own + core > _TINY else 0.0
        out = bank.router.out
        c = c.to(out.weight.device)
        out.weight[n: n + core_atoms] += lam * c[:, None] * out.weight[n + atom]
        out.bias[n: n + core_atoms] += lam * c * out.bias[n + atom]
        return lam

    @torch.no_grad()
    def evict(self, slot: int, direction: torch.Tensor) -> None:
        """Replace elastic atom `slot` by the unit `direction`: its coefficient row starts at
        zero (it adds nothing until trained), its usage at the mean, its Fisher at zero."""
        bank, n = self.bank, self.bank.n_atoms
        atom = self.config.core_atoms + slot
        bank.elastic[slot] = direction.to(bank.elastic) / direction.norm().clamp(min=_TINY)
        bank.router.out.weight[n + atom] = 0.0
        bank.router.out.bias[n + atom] = 0.0
        self.usage[slot] = self.usage.mean()
        for key, value in self.fisher.value.items():
            if key == "elastic":
                value[slot] = 0.0
            elif key.startswith("router.out."):
                value[[atom, n + atom]] = 0.0
        self.growth_events += 1
        self.stats["growth_events"] = self.growth_events

    # ---------------------------------------------------------------- what is logged
    def adapter_norm(self, model: nn.Module) -> float:
        """sqrt(sum over modules of (mean over the last forward's tokens of ||r r^T||_F / sqrt(d))^2),
        with ||r r^T||_F = ||r||^2; a module not run yet counts its bound 1 / sqrt(d)."""
        modules = [m for m in model.modules() if isinstance(m, HimalayaLinear)]
        total = 0.0
        for m in modules:
            sq = 1.0 if m.last_sq_norm is None else float(m.last_sq_norm)
            total += (sq / math.sqrt(m.base_layer.in_features)) ** 2
        return math.sqrt(total)

    def continual_fields(self, model: nn.Module) -> dict[str, float]:
        bank = self._bank_of(model)
        share = self.usage / self.usage.sum() if float(self.usage.sum()) > 0 else None
        entropy = 0.0 if share is None else float(-(share * share.clamp(min=_TINY).log()).sum())
        return {"atoms": float(bank.n_atoms), "growth_events": float(self.growth_events),
                "max_core_atom_norm": float(bank.core.norm(dim=1).max()),
                "max_elastic_atom_norm": float(bank.elastic.detach().norm(dim=1).max()),
                "elastic_usage_entropy": entropy}

    def log_fields(self) -> dict[str, float]:
        fields = {"router_temperature": self.bank.temperature}
        if self.history:
            fields["trailing_similarity"] = sum(self.history) / len(self.history)
        return fields

    # ---------------------------------------------------------------- resume
    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {"usage": self.usage.clone(), "ring": self.ring.clone(), "ring_count": self.ring_count,
                "history": list(self.history), "fisher": self.fisher.state_dict(),
                "growth_events": self.growth_events, "steps_done": self.steps_done,
                "current_task": self.current_task, "generator": self.bank.generator.get_state(),
                "stats": copy.deepcopy(self.stats)}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.usage, self.ring = state["usage"].clone(), state["ring"].clone()
        self.ring_count, self.history = state["ring_count"], list(state["history"])
        self.fisher.load_state_dict(state["fisher"])
        self.growth_events, self.steps_done = state["growth_events"], state["steps_done"]
        self.current_task = state["current_task"]
        self.stats = copy.deepcopy(state["stats"])
        bank = self._bank_of(model)
        bank.generator.set_state(state["generator"])
        bank.task, bank.temperature = self.current_task, self._temperature()

    # ---------------------------------------------------------------- save / load
    def save(self, model: nn.Module, out_dir: Path) -> None:
        """The dictionary at `dictionary_bits` and the router at `coefficient_bits` (packed codes,
        per-row float32 scales), the task head as trained."""
        from safetensors.torch import save_file

        bank, config = self._bank_of(model), self.config
        parts = {"core": (bank.core, config.dictionary_bits), "elastic": (bank.elastic, config.dictionary_bits),
                 **{f"router.{k}": (p, config.coefficient_bits) for k, p in bank.router.named_parameters()}}
        tensors = {f"{key}.{part}": t.detach().cpu().contiguous()
                   for key, (value, bits) in parts.items() for part, t in store(value, bits).items()}
        tensors.update({f"{HEAD_PREFIX}{k}": t.detach().cpu().contiguous() for k, t in task_head(model).items()})
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(Path(out_dir) / ADAPTER_TENSORS))
        meta = {"method": self.name, "targets": self.targets, "width": bank.d,
                "n_tasks": bank.router.task_embedding.num_embeddings, "task_names": self.task_names,
                "shapes": {key: list(value.shape) for key, (value, _) in parts.items()}, "stats": self.stats}
        (Path(out_dir) / ADAPTER_META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    def load(self, base_model: nn.Module, adapter_dir: Path) -> nn.Module:
        from safetensors.torch import load_file

        meta = json.loads((Path(adapter_dir) / ADAPTER_META).read_text())
        self._wrap(base_model, meta["targets"], meta["n_tasks"])
        tensors = load_file(str(Path(adapter_dir) / ADAPTER_TENSORS))
        bank, config = self.bank, self.config
        targets = {"core": bank.core, "elastic": bank.elastic,
                   **{f"router.{k}": p for k, p in bank.router.named_parameters()}}
        with torch.no_grad():
            for key, value in targets.items():
                bits = config.coefficient_bits if key.startswith("router.") else config.dictionary_bits
                stored = {part: tensors[f"{key}.{part}"] for part in ("codes", "scales")}
                value.copy_(restore(stored, bits, tuple(meta["shapes"][key])))
            for key, param in task_head(base_model).items():
                param.copy_(tensors[f"{HEAD_PREFIX}{key}"])
        bank.fake_quant = False  # it holds the stored values already
        self.stats = meta["stats"]
        return base_model

    # ---------------------------------------------------------------- harden / export
    def harden(self, model: nn.Module) -> nn.Module:
        """Eval mode: the top floor(max_active_atoms) atoms per token, hard; nothing trains."""
        self._bank_of(model).pending = []
        return model.requires_grad_(False).eval()

    def export(self, hardened: nn.Module, out_dir: Path) -> dict[str, Any]:
        from safetensors.torch import save_model

        bank = self._bank_of(hardened)
        base = next(m.base_layer for m in hardened.modules() if isinstance(m, HimalayaLinear))
        layout = {"method": self.name, "method_params": config_params(self.config), "targets": self.targets,
                  "n_tasks": bank.router.task_embedding.num_embeddings, "task": bank.task,
                  "fake_quant": bank.fake_quant, "dtype": str(base.weight.dtype).removeprefix("torch.")}
        hardened.config.save_pretrained(str(out_dir))
        save_model(hardened, str(Path(out_dir) / EXPORT_TENSORS))
        (Path(out_dir) / EXPORT_META).write_text(json.dumps(layout, indent=2, sort_keys=True))
        return {"targets": len(self.targets), "atoms": bank.n_atoms, "task": bank.task}

    @classmethod
    def load_export(cls, export_dir: Path, task: str, label_names: list[str] | None) -> nn.Module:
        from safetensors.torch import load_model

        layout = json.loads((Path(export_dir) / EXPORT_META).read_text())
        model = model_from_config(export_dir, task, label_names).to(getattr(torch, layout["dtype"]))
        bank = wrap(model, layout["targets"], Config.from_params(layout["method_params"]), layout["n_tasks"])
        bank.fake_quant, bank.task = layout["fake_quant"], layout["task"]
        load_model(model, str(Path(export_dir) / EXPORT_TENSORS), strict=True)
        return model.requires_grad_(False).eval()


Method = HimalayaMethod
