"""AdaLoRA from peft: SVD-shaped LoRA whose ranks are reallocated by importance during training.

peft needs `total_step` up front and `update_and_allocate(step)` after every optimiser
step (before gradients are cleared); pruned ranks are masked, not removed.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import AdaLoraConfig
from torch import nn

from ..peft_backed import PeftMethod, task_type


class AdaLoraMethod(PeftMethod):
    name = "adalora"

    def params_per_rank(self, in_features: int, out_features: int) -> int:
        return in_features + out_features + 1  # A row, B column and one singular value E

    def build_peft_config(self, rank: int, target_modules: list[str]) -> AdaLoraConfig:
        total = max(self.total_steps, 3)
        # peft requires tinit < total_step - tfinal; keep a budgeting phase of at least one step.
        tinit = int(self.params.get("tinit_ratio", 0.1) * total)
        tfinal = int(self.params.get("tfinal_ratio", 0.2) * total)
        if tinit + tfinal >= total:
            tinit, tfinal = 0, 0
        target_r = max(1, int(round(rank * float(self.params.get("target_rank_ratio", 0.5)))))
        return AdaLoraConfig(
            init_r=rank,
            target_r=target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=int(self.params.get("delta_t", 1)),
            total_step=total,
            lora_alpha=float(self.params.get("alpha", 2 * rank)),
            lora_dropout=float(self.params.get("dropout", 0.0)),
            orth_reg_weight=float(self.params.get("orth_reg_weight", 0.5)),
            target_modules=target_modules,
            task_type=task_type(self.task),
        )

    def attach(self, model: nn.Module) -> nn.Module:
        peft_model = super().attach(model)
        self.stats["target_rank"] = peft_model.peft_config["default"].target_r
        return peft_model

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        tuner = model.base_model
        config = tuner.peft_config[tuner.trainable_adapter_name]
        allocator = tuner.rankallocator
        budget, _ = allocator.budget_schedule(step)
        if allocator.init_bgt <= allocator.target_bgt:
            return  # rank 1 everywhere: nothing can ever be pruned, AdaLoRA is SVD-LoRA here
        if step <= config.total_step - config.tfinal and allocator.init_bgt - budget < 1:
            # Nothing to prune yet: peft would call kthvalue(k=0) and raise (peft issue 2337).
            allocator.update_ipt(tuner.model)
            return
        tuner.update_and_allocate(step)

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        # The importance EMAs live outside the parameters; without them a resumed run diverges.
        alloc = model.base_model.rankallocator
        return {
            key: {name: t.detach().clone() for name, t in getattr(alloc, key).items()}
            for key in ("ipt", "exp_avg_ipt", "exp_avg_unc")
        }

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        alloc = model.base_model.rankallocator
        for key, tensors in state.items():
            setattr(alloc, key, {name: torch.as_tensor(t) for name, t in tensors.items()})


Method = AdaLoraMethod
