"""AdaLoRA through peft, pruned from init_rank_ratio x the budget down to the budget."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..budget import Allocation
from ..peft_backed import PeftMethod, exact_targets, task_type
from .config import Config

if TYPE_CHECKING:
    from peft import AdaLoraConfig

IMPORTANCE_KEYS = ("ipt", "exp_avg_ipt", "exp_avg_unc")


class AdaLoraMethod(PeftMethod):
    name = "adalora"
    config_class = Config
    extra_params_per_rank = 1  # the singular value E next to the A row and B column

    def init_rank(self, allocation: Allocation) -> int:
        # round() first: 1.5 x 2.0 must stay 3, not become 4 through a float's last bit.
        return math.ceil(round(self.config.init_rank_ratio * allocation.mean_rank, 9))

    def expected_adapter_params(self, allocation: Allocation) -> int:
        return self.init_rank(allocation) * sum(allocation.costs.values())

    def schedule(self) -> tuple[int, int, int]:
        """(total_step, tinit, tfinal) for peft; too few steps for both phases: prune throughout."""
        total = max(self.total_steps, 1)
        tinit, tfinal = int(self.config.tinit_ratio * total), int(self.config.tfinal_ratio * total)
        if tinit + tfinal >= total:  # peft requires tinit < total_step - tfinal
            tinit, tfinal = 0, 0
        return total, tinit, tfinal

    def build_peft_config(self, allocation: Allocation) -> "AdaLoraConfig":
        from peft import AdaLoraConfig

        init_r = self.init_rank(allocation)
        total, tinit, tfinal = self.schedule()
        alpha = self.config.alpha
        return AdaLoraConfig(
            init_r=init_r,
            target_r=max(1, round(allocation.mean_rank)),  # informative; attach sets the exact total
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.config.delta_t,
            total_step=total,
            lora_alpha=alpha if alpha is not None else 2 * init_r,
            lora_dropout=self.config.dropout,
            orth_reg_weight=self.config.orth_reg_weight,
            target_modules=exact_targets(allocation),
            task_type=task_type(self.task),
        )

    def attach(self, model: nn.Module) -> nn.Module:
        peft_model = super().attach(model)
        # The final budget is the rule's total rank K, whatever target_r x n_modules gives.
        peft_model.base_model.rankallocator.target_bgt = self.allocation.total_rank
        self.final_pruned = False
        adapter = self.stats["adapter_params"]
        self.stats.update(
            init_rank=self.init_rank(self.allocation),
            initial_adapter_params=adapter,
            initial_budget_pct=100.0 * adapter / self.allocation.backbone_params,
            budget_measured="planned",  # "final mask" from the final pruning (or the last step) on
        )
        return peft_model

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        self._reallocate(model, step)
        if self.final_pruned or step >= self.total_steps:
            self._measure(model)  # from the final pruning on, the kept ranks are the final ones

    def _reallocate(self, model: nn.Module, step: int) -> None:
        tuner = model.base_model
        config = tuner.peft_config[tuner.trainable_adapter_name]
        allocator = tuner.rankallocator
        final_step = config.total_step - config.tfinal
        if allocator.init_bgt <= allocator.target_bgt:
            return  # nothing can ever be pruned: AdaLoRA is SVD-LoRA here
        if step > final_step and not self.final_pruned:
            step = final_step  # its own step was skipped (fp16 overflow): prune to the budget now
        budget, _ = allocator.budget_schedule(step)
        if step <= final_step and allocator.init_bgt - budget < 1:
            # Nothing to prune yet: peft would call kthvalue(k=0) and raise (peft issue 2337).
            allocator.update_ipt(tuner.model)
            return
        tuner.update_and_allocate(step)
        self.final_pruned = self.final_pruned or step == final_step

    def _measure(self, model: nn.Module) -> None:
        """Effective budget: ranks whose singular value is nonzero (pruned ones are masked to 0)."""
        adapter = model.base_model.trainable_adapter_name
        kept = {
            name: int(torch.count_nonzero(module.lora_E[adapter]))
            for name, module in model.base_model.model.named_modules()
            if isinstance(getattr(module, "lora_E", None), nn.ParameterDict) and adapter in module.lora_E
        }
        effective = self.allocation.params_for(kept)
        self.stats.update(
            rank=sum(kept.values()) / len(kept),
            rank_min=min(kept.values()),
            rank_max=max(kept.values()),
            kept_total_rank=sum(kept.values()),
            effective_adapter_params=effective,
            achieved_budget_pct=100.0 * effective / self.allocation.backbone_params,
            budget_measured="final mask",
        )

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        tuner = model.base_model
        alloc = tuner.rankallocator
        # The importance EMAs live outside the parameters; without them a resumed run diverges.
        state: dict[str, Any] = {
            key: {name: t.detach().clone() for name, t in getattr(alloc, key).items()} for key in IMPORTANCE_KEYS
        }
        # The pruning mask lives in the config, not in a parameter; after the final pruning
        # every step re-applies it, so a run resumed there needs it.
        state["rank_pattern"] = copy.deepcopy(tuner.peft_config[tuner.trainable_adapter_name].rank_pattern)
        state["final_pruned"] = self.final_pruned
        state["stats"] = copy.deepcopy(self.stats)
        return state

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        tuner = model.base_model
        alloc = tuner.rankallocator
        for key in IMPORTANCE_KEYS:
            setattr(alloc, key, {name: torch.as_tensor(t) for name, t in state[key].items()})
        tuner.peft_config[tuner.trainable_adapter_name].rank_pattern = copy.deepcopy(state.get("rank_pattern"))
        self.final_pruned = bool(state.get("final_pruned", False))
        self.stats.update(state.get("stats", {}))


Method = AdaLoraMethod
