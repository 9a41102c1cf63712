"""AdaLoRA from peft: SVD-shaped LoRA whose ranks are reallocated by importance during training.

Equal terms with LoRA (as in the AdaLoRA paper, where the budget is the final one):

* Final budget = nominal budget. The shared budget rule (methods/budget.py, one rank
  costing in + out + 1 parameters: A row, B column, singular value) gives per-module
  ranks; their total K is the number of ranks AdaLoRA keeps after its final pruning
  (peft's `rankallocator.target_bgt` is set to K, which `target_r x n_modules` cannot
  always express).
* Initial rank: init_r = ceil(init_rank_ratio x K / n_modules), uniform over the targets;
  `init_rank_ratio` defaults to 1.5, the paper's b(0) = 1.5 b(T). Training thus starts
  above the budget and is pruned down to it.
* Stats: `initial_budget_pct` / `initial_adapter_params` describe the ranks allocated at
  the start; `achieved_budget_pct` / `effective_adapter_params` count only the ranks left
  unmasked (nonzero singular values), measured from the final pruning on and at the last
  step (`budget_measured: final mask`; before that they give the plan, `planned`).

peft needs `total_step` up front and `update_and_allocate(step)` after every optimiser
step (before gradients are cleared); pruned ranks are masked, not removed, and the mask
lives in `peft_config[...].rank_pattern`, which `state_dict` carries for an exact resume.

config.py: `Config` (torch-free); model.py: `Method`.
"""
