"""Pareto controller distillation for MetaS-PEFT (seed 002, part D; methods/pareto_tree.py):
K nested hardened configurations, an MLP controller over (token entropy, position), the
depth-3 tree distilled from it, and the router that uses the tree at inference. One thread.

    .venv/bin/python bench/pareto_tree.py                     # MetaS-PEFT trained here (~1.5 min)
    .venv/bin/python bench/pareto_tree.py --save-run /tmp/pt  # ... and kept as a run folder
    .venv/bin/python bench/pareto_tree.py --adapter results/runs/hwgate--metas_peft--b0.5--s0
    .venv/bin/python bench/pareto_tree.py --levels 4 --n-inputs 512 --min-agreement 0 0.75

The gated model:
- `--adapter RUN_DIR`: a finished MetaS-PEFT run (its `adapter/` folder and `config.json`),
  on the backbone resources/models/<model> and the tokenised data results/data/<dataset>/<model>
  its config names, costed by results/surrogate/<family>/store;
- else MetaS-PEFT trained here on the shipped MiniLM (resources/models/minilm) and the Rotten
  Tomatoes sentences (results/data/rt_sentiment/minilm) with the embedded hwgate family's
  settings (config.yaml: budget 0.5%, target device Pixel-8-TPU, the unseen device of
  results/surrogate/hwgate/store, seq_len 48, 32-bit weights, the family's training) except
  two: `--epochs` 6 (120 steps) instead of 2, and gate_lr 0.03 instead of 0.1. With the
  family's own settings the gated model is still at chance after 40 steps (validation
  accuracy 0.53, every configuration predicting one label), and gate_lr 0.1 for 120 steps
  closes every layer; 120 steps at 0.03 reach 0.80 with the gates spread. `--save-run DIR`
  keeps that model as a run folder (adapter/ and config.json) for `--adapter`.
The (E, L, P) are the calibrated surrogate's predictions for Pixel-8, and the device table it
was trained on is the roofline model's (simulated): labelled so in the output.

Reported (bench/results/pareto_tree.{json,txt}): the nested configurations (kept gates, kept
counts, parameters, predicted E, L, P, scalar cost, agreement with the largest on the training
inputs, validation accuracy), the unigram table's size, and per `--min-agreement` value (0:
every Pareto configuration, as specified; 0.75: only those that agree with the largest on at
least 75% of the training inputs): the Pareto set, the MLP's targets and choices on the
training inputs, the tree's JSON and size, on the validation split the tree's fidelity to the
MLP, routed accuracy against the largest and agreement with it, the mean predicted (E, L, P)
of the routed choices, and the (features + tree) overhead per token and per input against one
forward pass of the largest configuration (batch 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from transformers.utils import logging as hf_logging  # noqa: E402

from wattpeft.methods.pareto_tree import (adapter_loader, distil, dumps_tree, evaluate,  # noqa: E402
                                          measure_overhead, nested_configurations, predict_labels,
                                          surrogate_cost)
from wattpeft.stages.common import model_source, open_run_data  # noqa: E402
from wattpeft.surrogate import load_surrogate  # noqa: E402
from wattpeft.utils.io import read_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = {  # the embedded hwgate family's MetaS-PEFT (config.yaml)
    "method": "metas_peft", "budget": 0.5, "family": "hwgate", "model": "minilm", "dataset": "rt_sentiment",
    "method_params": {"target_device": "Pixel-8-TPU", "seq_len": 48, "param_bits": 32, "gate_lr": 0.03},
    "training": {"epochs": 2, "batch_size": 16, "learning_rate": 2.0e-3, "weight_decay": 0.01,
                 "warmup_ratio": 0.06, "gradient_accumulation_steps": 1, "max_grad_norm": 1.0,
                 "mixed_precision": "no", "checkpoint_every": 10_000, "log_every": 10},
}


def paths(family: str, model: str, dataset: str) -> dict[str, Path]:
    return {"model": ROOT / "resources" / "models" / model, "data": ROOT / "results" / "data" / dataset / model,
            "surrogate": ROOT / "results" / "surrogate" / family / "store"}


def require(found: dict[str, Path]) -> None:
    missing = [f"{k}: {p}" for k, p in found.items() if not p.exists()]
    if missing:
        sys.exit("pareto_tree bench: missing " + "; ".join(missing) + " (build them with the pipeline first)")


def train_here(setting: dict, data, model_dir: Path, adapter_dir: Path, epochs: int) -> dict:
    """MetaS-PEFT trained for `epochs` on the run data, saved to `adapter_dir`; its summary."""
    from accelerate.utils import set_seed

    from wattpeft.data.loading import make_collator
    from wattpeft.methods import get_method
    from wattpeft.training.trainer import Trainer, plan_schedule

    set_seed(0)
    _, model = data.load_model(model_source(model_dir))
    rows = data.split("train")
    cfg = {"run_id": "bench-pareto-tree", "seed": 0, "training": {**setting["training"], "epochs": epochs}}
    schedule = plan_schedule(len(rows), cfg["training"])
    inputs = {"surrogate": load_surrogate(setting["paths"]["surrogate"])}
    method = get_method(setting["method"])(setting["method_params"], setting["budget"], data.task,
                                           schedule.total_steps, inputs)
    model = method.attach(model)
    started = time.perf_counter()
    outcome = Trainer(cfg, model, method, rows, make_collator(data.task, data.manifest["pad_token_id"]),
                      progress=False).train()
    method.save(model, adapter_dir)
    return {"steps": outcome.steps, "train_time_s": time.perf_counter() - started,
            "final_train_loss": outcome.final_loss, "expected_kept": method.stats["expected_kept"],
            "hard_kept": method.stats["hard_kept"]}


def save_run(folder: Path, adapter_dir: Path, setting: dict) -> None:
    """`adapter_dir` and a config.json as a finished run's, enough for `--adapter`."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(adapter_dir, folder / "adapter", dirs_exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "method": setting["method"], "budget": setting["budget"], "method_params": setting["method_params"],
        "family": setting["family"], "model": {"name": setting["model"]}, "dataset": {"name": setting["dataset"]},
        "training": setting["training"]}, indent=2) + "\n")


@torch.no_grad()
def forward_us(model: torch.nn.Module, rows, repeats: int = 3) -> float:
    """Median over `repeats` passes of the mean time of one batch-1 forward pass per input."""
    def one_pass() -> float:
        started = time.perf_counter()
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return (time.perf_counter() - started) / len(rows) * 1e6

    return statistics.median(one_pass() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, help="a gated run's folder (results/runs/<run>)")
    parser.add_argument("--levels", type=int, default=4, help="nested configurations K (before Pareto)")
    parser.add_argument("--n-inputs", type=int, default=512, help="training inputs for the MLP and the tree")
    parser.add_argument("--epochs", type=int, default=6, help="training here (no --adapter): 20 steps each")
    parser.add_argument("--repeats", type=int, default=200, help="timing passes over the validation inputs")
    parser.add_argument("--min-agreement", type=float, nargs="+", default=[0.0, 0.75],
                        help="distil once per value (0: every Pareto configuration, as specified)")
    parser.add_argument("--save-run", type=Path, help="keep the model trained here as a run folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pareto_tree.json")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    with tempfile.TemporaryDirectory() as tmp:
        if args.adapter:
            cfg = read_json(args.adapter / "config.json")
            setting = {"method": cfg["method"], "budget": cfg["budget"], "method_params": cfg["method_params"],
                       "paths": paths(cfg["family"], cfg["model"]["name"], cfg["dataset"]["name"]),
                       "source": f"run folder {args.adapter}"}
            adapter_dir, trained = args.adapter / "adapter", None
            if cfg["method"] != "metas_peft":
                sys.exit(f"pareto_tree bench: costs configurations with MetaS-PEFT's surrogate; {cfg['method']} "
                         "trained against another cost (use the library with its cost=)")
            require({**setting["paths"], "adapter": adapter_dir})
        else:
            setting = {**DEFAULT, "paths": paths(DEFAULT["family"], DEFAULT["model"], DEFAULT["dataset"])}
            require(setting["paths"])
            adapter_dir = Path(tmp) / "adapter"
        data = open_run_data(setting["paths"]["data"])
        if data.task != "classification":
            sys.exit(f"pareto_tree bench: a sequence classifier is needed, the data's task is {data.task}")
        if not args.adapter:
            trained = train_here(setting, data, setting["paths"]["model"], adapter_dir, args.epochs)
            setting["source"] = (f"MetaS-PEFT trained here: {trained['steps']} steps on "
                                 f"{setting['paths']['data'].relative_to(ROOT)}")
            if args.save_run:
                save_run(args.save_run, adapter_dir, setting)
        source = model_source(setting["paths"]["model"])
        load = adapter_loader(setting["method"], setting["method_params"], setting["budget"], adapter_dir,
                              lambda: data.load_model(source)[1], data.task)
        cost = surrogate_cost(load()[0], load_surrogate(setting["paths"]["surrogate"]))
        configurations = nested_configurations(load, args.levels, cost=cost)

    pad_id = data.manifest["pad_token_id"]
    train_rows, val_rows = list(data.split("train")), list(data.split("validation"))
    gold = np.array([row["label"] for row in val_rows])
    val_accuracy = {c.name: float((predict_labels(c.model, val_rows, pad_id) == gold).mean()) for c in configurations}
    largest_us = forward_us(configurations[-1].model, val_rows)
    variants = []
    for floor in args.min_agreement:
        distilled = distil(configurations, train_rows, data.manifest["tokenizer"]["vocab_size"], pad_id,
                           n_inputs=args.n_inputs, min_agreement=floor)
        overhead = measure_overhead(distilled, val_rows, args.repeats)
        variants.append({
            "min_agreement": floor, "train": distilled.train, "tree": distilled.tree,
            "tree_bytes": len(dumps_tree(distilled.tree).encode()), "validation": evaluate(distilled, val_rows, pad_id),
            "overhead": {**overhead, "largest_forward_us_per_input_batch1": largest_us,
                         "tree_share_of_forward": overhead["tree_us_per_input"] / largest_us}})
    result = {
        "source": setting["source"], "method": setting["method"], "budget": setting["budget"],
        "method_params": setting["method_params"], "trained_here": trained,
        "cost_model": {**cost.stats(), "surrogate": str(setting["paths"]["surrogate"].relative_to(ROOT)),
                       "note": "predicted by the meta-surrogate; its device table's simulated rows are a roofline "
                               "model of published figures (SIMULATED)"},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
        platform.machine(),
        "configurations": [{**{k: v for k, v in c.as_dict().items() if k != "pareto"},
                            "validation_accuracy": val_accuracy[c.name]} for c in configurations],
        "unigram_table_bytes": len(distilled.features.to_json().encode()),
        "unigram_seen_ids": len(distilled.features.counts), "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = summary(result)
    print("\n".join(lines))
    args.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out} and {args.out.with_suffix('.txt')}", file=sys.stderr)


def summary(result: dict) -> list[str]:
    cm, metrics = result["cost_model"], ("energy_j", "latency_ms", "peak_power_w")
    lines = [f"{result['source']}; {result['method']} at budget {result['budget']}%; one thread, torch "
             f"{result['torch']}",
             f"cost: meta-surrogate {cm['surrogate']}, target device {cm['target_device']} "
             f"({cm['target_device_role']}, {cm['on_device_measurements']} calibration measurements); {cm['note']}",
             "", "nested configurations (agree: share of the training inputs labelled as the largest labels them):",
             f"{'config':>6} {'share':>5} {'open l/h/r':>12} {'layers':>6} {'heads/l':>7} {'ranks':>5} "
             f"{'params':>10} {'E J':>10} {'L ms':>9} {'P W':>7} {'cost':>7} {'agree':>6} {'val acc':>7}"]
    for c in result["configurations"]:
        kept, pred = c["kept"], c["prediction"]
        opened = "/".join(str(c["open_gates"].get(k, "-")) for k in ("layers", "heads", "ranks"))
        lines.append(f"{c['name']:>6} {c['share']:>5.2f} {opened:>12} {kept['kept_layers']:>6.0f} "
                     f"{kept['kept_heads']:>7.2f} {kept['kept_ranks']:>5.2f} {c['params']:>10,} "
                     f"{pred['energy_j']:>10.4g} {pred['latency_ms']:>9.4g} {pred['peak_power_w']:>7.3g} "
                     f"{c['cost']:>7.3f} {c['agreement']:>6.3f} {c['validation_accuracy']:>7.3f}")
    lines.append(f"feature extractor's unigram table (stored apart from the tree): {result['unigram_table_bytes']:,} "
                 f"bytes of JSON, {result['unigram_seen_ids']:,} seen ids")
    share = lambda values: " ".join(f"{v:.2f}" for v in values)  # noqa: E731
    for variant in result["variants"]:
        val, over, train = variant["validation"], variant["overhead"], variant["train"]
        lines += ["",
                  f"min_agreement {variant['min_agreement']:g}: Pareto set {', '.join(train['pareto'])} "
                  f"(dropped: {', '.join(train['dropped']) or 'none'})",
                  f"  training inputs {train['inputs']}: target share {share(train['target_share'])}; MLP choice "
                  f"share {share(train['mlp_choice_share'])}; MLP = target on {train['mlp_matches_target']:.3f}; "
                  f"tree = MLP on {train['tree_matches_mlp']:.3f}",
                  f"  tree: {variant['tree_bytes']} bytes of JSON (limit 1024): {json.dumps(variant['tree']['tree'])}",
                  f"  validation ({val['inputs']} inputs): fidelity tree vs MLP {val['fidelity']:.3f}; routed to "
                  f"{share(val['choice_share'])}",
                  f"  routed accuracy {val['routed_accuracy']:.3f}, largest {val['largest_accuracy']:.3f}; routed = "
                  f"largest's label on {val['agreement_with_largest']:.3f}",
                  "  mean predicted (E J, L ms, P W), routed: "
                  + ", ".join(f"{val['routed_predicted'][m]:.4g}" for m in metrics) + "; largest: "
                  + ", ".join(f"{val['largest_predicted'][m]:.4g}" for m in metrics) + " (ratio "
                  + ", ".join(f"{val['routed_predicted_ratio'][m]:.3f}" for m in metrics) + ")",
                  f"  overhead (features + tree, pure Python, median of {over['repeats']} passes over "
                  f"{over['inputs']} inputs, {over['tokens']} tokens): {over['tree_us_per_token']:.3f} us/token, "
                  f"{over['tree_us_per_input']:.2f} us/input; the MLP instead {over['mlp_us_per_input']:.1f} us/input; "
                  f"the largest configuration's forward pass (batch 1) "
                  f"{over['largest_forward_us_per_input_batch1']:.0f} "
                  f"us/input (tree: {100 * over['tree_share_of_forward']:.3f}% of it)"]
    return lines


if __name__ == "__main__":
    main()
