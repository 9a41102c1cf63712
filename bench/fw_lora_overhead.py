"""FW-LoRA's cost against LoRA and AdaLoRA, per optimiser step, side by side in one run.

    .venv/bin/python bench/fw_lora_overhead.py                 # both models, one thread
    .venv/bin/python bench/fw_lora_overhead.py --models minilm --steps 20

For each model: one training step (forward, loss, backward, AdamW step, the method's
after-step hook) timed for LoRA, FW-LoRA during warm-up (hooks measuring the Fisher
proxy), FW-LoRA after warm-up (the Gram-matrix penalty only) and AdaLoRA, round-robin so
that drift hits all alike; medians over `--steps` steps after 2 untimed ones. Models:
`minilm` (the embedded MiniLM-L6, real weights, from resources/models/minilm: run `make
run` or `snakemake resources/models/minilm` first) and `roberta-base` (RoBERTa-base's
shape with random weights: exact for speed). Same budget (0.5%) for all methods.

Then the error of the Fisher estimate the pipeline uses (`auto`: Gaussian probes on these
batch sizes) against the exact value, per batch and for the importances I_m after
`--error-steps` warm-up steps. Targets (seed 004, issue 7): FW-LoRA / LoRA <= 1.02 after
warm-up and <= 1.15 during warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)

from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaForSequenceClassification  # noqa: E402

from wattpeft.methods import get_method  # noqa: E402
from wattpeft.methods.fisher import squared_grad_norm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"minilm": (16, 48), "roberta-base": (8, 64)}  # (batch, tokens) per step
# FW-LoRA as the pipeline runs it (estimator auto), and with the exact estimator for contrast.
VARIANTS = ("lora", "fw_lora warm-up", "fw_lora warm-up exact", "fw_lora after", "adalora")
NEVER = 10**9  # a warm-up that outlasts the benchmark
TARGETS = {"fw_lora after": 1.02, "fw_lora warm-up": 1.15}


def backbone(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "minilm":
        path = ROOT / "resources" / "models" / "minilm"
        if not (path / "config.json").is_file():
            sys.exit(f"{path} is missing: run `snakemake --cores 1 {path.relative_to(ROOT)}` first")
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return RobertaForSequenceClassification(RobertaConfig(num_labels=2))  # roberta-base's shape


def batch_for(model: torch.nn.Module, name: str, seed: int) -> dict[str, torch.Tensor]:
    rows, tokens = SHAPES[name]
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size - 1, (rows, tokens), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (rows,), generator=gen)}


class Stepper:
    """One method on its own copy of the backbone, stepping like the trainer does."""

    def __init__(self, variant: str, name: str):
        method_name = variant.split()[0]
        params = {"alpha": 16, "dropout": 0.1}
        if method_name == "fw_lora":
            params["fisher_warmup_steps"] = NEVER - 1 if "warm-up" in variant else 1
            params["fisher_estimator"] = "exact" if variant.endswith("exact") else "auto"
        self.method = get_method(method_name)(params, 0.5, "classification", NEVER)
        self.model = self.method.attach(backbone(name))
        self.model.train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.step_no = 0

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        start = time.perf_counter()
        loss = self.model(**batch).loss
        extra = self.method.extra_loss(self.model, self.step_no)
        if extra is not None:
            loss = loss + extra
        loss.backward()
        self.optimizer.step()
        self.step_no += 1
        self.method.after_optimizer_step(self.model, self.step_no)
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def time_model(name: str, steps: int) -> dict[str, float]:
    total = steps + 2
    steppers = {variant: Stepper(variant, name) for variant in VARIANTS}
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for i in range(total):
        batch = batch_for(steppers["lora"].model, name, seed=i)
        for variant, stepper in steppers.items():
            elapsed = stepper.step(batch)
            if i >= 2:
                times[variant].append(elapsed)
    warm = steppers["fw_lora warm-up"]
    assert warm.method.importance is None and warm.method.hooks.active, "warm-up variant left warm-up"
    assert steppers["fw_lora after"].method.importance is not None, "after variant is still warming up"
    return {variant: statistics.median(values) for variant, values in times.items()}


def penalty_ms(name: str, repeats: int = 30) -> tuple[float, int]:
    """Median time of the after-warm-up penalty alone (forward and backward): the whole of
    what FW-LoRA adds to a LoRA step then, free of the step-to-step noise of a full step."""
    stepper = Stepper("fw_lora after", name)
    stepper.step(batch_for(stepper.model, name, seed=0))  # ends warm-up (K = 1): I_m frozen
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        stepper.method.extra_loss(stepper.model, 2).backward()
        times.append(time.perf_counter() - start)
        stepper.optimizer.zero_grad(set_to_none=True)
    return 1000 * statistics.median(times), len(stepper.method.modules)


def estimate_error(name: str, steps: int) -> dict[str, float]:
    """Per-batch relative error of the `auto` estimate, and the largest relative error of
    the importances after `steps` warm-up steps, against exact on the same batches."""
    runs = {}
    for estimator in ("exact", "auto"):
        method = get_method("fw_lora")({"alpha": 16, "dropout": 0.0, "fisher_warmup_steps": steps,
                                        "fisher_estimator": estimator}, 0.5, "classification", 10 * steps)
        model = method.attach(backbone(name))
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        for i in range(steps):  # lr 0: both see the same model, hence the same gradients
            model(**batch_for(model, name, seed=i)).loss.backward()
            method.after_optimizer_step(model, i + 1)
            optimizer.zero_grad(set_to_none=True)
        runs[estimator] = method
    exact, auto = runs["exact"].importance, runs["auto"].importance
    worst = max(abs(auto[m] - exact[m]) / exact[m] for m in exact)
    # What enters the loss is (1 - I_m): its error is what changes training.
    worst_weight = max(abs(auto[m] - exact[m]) / (1 - exact[m]) for m in exact)
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(SHAPES[name][0] * SHAPES[name][1], 384), torch.randn(SHAPES[name][0] * SHAPES[name][1], 384)
    true = float(squared_grad_norm(x, g, "direct"))
    draws = [float(squared_grad_norm(x, g, "probes", 16, gen)) / true - 1 for _ in range(200)]
    return {"importance_max_rel_error": worst, "weight_max_rel_error": worst_weight, "forms": dict(runs["auto"].hooks.forms),
            "per_batch_rel_sd_random": statistics.pstdev(draws)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method (after 2 untimed)")
    parser.add_argument("--error-steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    for name in args.models:
        rows, tokens = SHAPES[name]
        medians = time_model(name, args.steps)
        lora = medians["lora"]
        print(f"\n{name}: batch {rows} x {tokens} tokens, budget 0.5%, median of {args.steps} steps")
        for variant in VARIANTS:
            ratio = medians[variant] / lora
            target = TARGETS.get(variant)
            verdict = "" if target is None else f"  target <= {target:.2f}: {'met' if ratio <= target else 'MISSED'}"
            print(f"  {variant:22s} {1000 * medians[variant]:9.1f} ms/step  {ratio:5.3f}x LoRA{verdict}")
        cost, modules = penalty_ms(name)
        print(f"  the penalty alone (forward + backward, {modules} modules): {cost:.2f} ms "
              f"= {100 * cost / 1000 / lora:.2f}% of a LoRA step")
    if "minilm" in args.models:
        error = estimate_error("minilm", args.error_steps)
        print(f"\nFisher estimate `auto` on minilm ({error['forms']} batches by form):")
        print(f"  importances after {args.error_steps} warm-up steps: largest relative error "
              f"{100 * error['importance_max_rel_error']:.1f}% against exact; of the penalty weights "
              f"1 - I_m: {100 * error['weight_max_rel_error']:.2f}%")
        print(f"  one batch of random X, G (384 x 384): relative s.d. "
              f"{100 * error['per_batch_rel_sd_random']:.1f}% with 16 probes (bound sqrt(2/16) = 35%)")


if __name__ == "__main__":
    main()
