"""GPU-hours of a config on A100 and H100 nodes: an ESTIMATE, not a measurement.

    python bench/gpu_hours.py configs/seed000.yaml configs/seed004.yaml [--mfu 0.35]

No GPU throughput was measured for this estimate (no GPU was lent to the issue that wrote
it). It counts FLOPs from the config's own run matrix (every search trial and every final
run, from wattpeft.config) and divides by an ASSUMED share of each GPU's dense bf16 peak:
- training on a frozen backbone: 4 N FLOPs per token (forward 2N, backward to the
  activations 2N; no weight gradients), over train rows x epochs x tokens per row;
- evaluation: 2 N per prompt token and per generated token, over the test rows;
- attention's seq^2 term is left out (under 5% of 2N per token at these lengths).
Rows and mean tokens per row are the datasets' published sizes (below, with sources);
a hub dataset's train split is counted whole (the workflow cuts a few % off for testing).
Measure your own: the profile stage's throughput on one node replaces the assumed MFU.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wattpeft.config import group_ids, iter_runs, load_config, resolve_run_config, validate_config  # noqa: E402

# Parameters of the seeds' backbones (model cards).
PARAMS = {
    "meta-llama/Llama-2-7b-chat-hf": 6.74e9,
    "FacebookAI/roberta-base": 1.25e8,
}
# (train rows, test rows, mean prompt tokens, mean target tokens) of hub datasets.
# SST-2 / CoLA: GLUE (Wang et al. 2019); the test split here is cut from train, so the
# validation size is used. Mean tokens: about 10 and 9 words a sentence (GLUE), BPE ~1.3x.
# CNN/DailyMail 3.0.0: 287,113 / 11,490 rows; articles 781 and summaries 56 words on
# average (See et al. 2017), Llama tokens ~1.3x a word, articles truncated at max_length.
DATASETS = {
    "glue/sst2": (67_349, 872, 13, 1),
    "glue/cola": (8_551, 1_043, 12, 1),
    "cnn_dailymail": (287_113, 11_490, 1_015, 73),
}
# Dense bf16 peak FLOP/s (NVIDIA datasheets: A100 SXM 312 TFLOP/s, H100 SXM 989 TFLOP/s).
PEAK = {"A100": 312e12, "H100": 989e12}


def run_flops(run_cfg: dict) -> tuple[float, float]:
    """(training FLOPs, evaluation FLOPs) of one run; NaN where sizes are unknown."""
    n = PARAMS.get(run_cfg["model"].get("hub_id"), math.nan)
    rows = DATASETS.get(run_cfg["dataset"].get("hub"))
    if rows is None:
        return math.nan, math.nan
    train_rows, test_rows, prompt, target = rows
    prompt = min(prompt, run_cfg["dataset"].get("max_length", prompt))
    epochs = run_cfg["training"]["epochs"]
    train = 4 * n * train_rows * epochs * (prompt + target)
    generated = run_cfg.get("evaluation", {}).get("max_new_tokens", target) if target > 1 else 0
    evaluate = 2 * n * test_rows * (prompt + generated)
    return train, evaluate


def family_flops(cfg: dict) -> dict[str, dict[str, float]]:
    """Per family: FLOPs of its search trials, final runs and evaluations."""
    out: dict[str, dict[str, float]] = {}
    groups = set(group_ids(cfg))
    for key in iter_runs(cfg):
        run_cfg = resolve_run_config(cfg, key.run_id)
        train, evaluate = run_flops(run_cfg)
        fam = out.setdefault(key.family, {"search": 0.0, "final": 0.0, "evaluate": 0.0, "runs": 0})
        fam["final"] += train
        fam["evaluate"] += evaluate
        fam["runs"] += 1
        if run_cfg["group_id"] in groups:  # the group's search, counted once
            groups.discard(run_cfg["group_id"])
            fam["search"] += train * run_cfg["optuna"]["n_trials"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--mfu", type=float, default=0.35, help="ASSUMED share of the bf16 peak reached")
    args = parser.parse_args()
    print(f"ESTIMATE at an assumed {args.mfu:.0%} of dense bf16 peak (no GPU throughput measured)")
    print(f"{'config':18} {'family':16} {'runs':>4} {'search':>6} {'PFLOP':>9} {'A100 h':>9} {'H100 h':>9}")
    for path in args.configs:
        cfg = validate_config(load_config(path), source=str(path), base_dir=path.parent)
        for family, f in family_flops(cfg).items():
            total = f["search"] + f["final"] + f["evaluate"]
            hours = {gpu: total / (peak * args.mfu) / 3600 for gpu, peak in PEAK.items()}
            print(f"{path.name:18} {family:16} {f['runs']:>4} {f['search'] / total:>6.0%} {total / 1e15:>9.0f} "
                  f"{hours['A100']:>9.1f} {hours['H100']:>9.1f}")


if __name__ == "__main__":
    main()
