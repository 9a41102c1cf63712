"""What hardening a gated LoRA model buys: latency per batch and parameters of a pruned export
against the unpruned LoRA model, MiniLM's shape, one CPU thread.

    .venv/bin/python bench/gated_speed.py                     # 16 48 128 512 tokens, batch 8
    .venv/bin/python bench/gated_speed.py --out bench/results/gated_speed.json
    .venv/bin/python bench/gated_speed.py --lengths 48 512 --batch 1 --repeats 9
    .venv/bin/python bench/gated_speed.py --quick             # smoke run: 2 lengths, 3 rounds

Models, both exports of the same gated method (metas_peft's structure: gates over layers,
heads and ranks; LoRA rank 8 on query and value), reloaded through
wattpeft.methods.load_export as the profiling stage loads them:
- unpruned: every gate open, so hardening removes nothing: the backbone with unmerged LoRA-8;
- pruned: a realistic configuration, every other layer (3 of 6), half the heads of each kept
  layer (6 of 12) and half the ranks of each module (4 of 8) closed, the rest open at 1.
The backbone is resources/models/minilm (MiniLM-L6-H384) when present, else random weights
from its config (the same speed); LoRA B is random, so the adapter path is really computed.

Measured: one forward pass of a batch of `--batch` sequences of random token ids at each
length (full attention mask) under torch.inference_mode(); `--warmup` untimed passes per
model, then `--repeats` rounds, one pass of each model per round, the order reversed every
other round so that drift hits both alike. Per model the median; the latency ratio
pruned/unpruned is the median of the per-round ratios. Parameters are counted on the
exports. The pruned model's FLOPs follow the configuration (about half the layers, and half
the attention width in those), so a ratio near 0.5 or below is what pruning should give;
what remains fixed (embeddings, classifier) and the per-layer overheads keep it above the
FLOP ratio at short lengths.
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
import torch  # noqa: E402

torch.set_num_threads(1)

from transformers import AutoConfig, BertForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from wattpeft.methods import get_method, load_export  # noqa: E402
from wattpeft.methods.base import count_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "resources" / "models" / "minilm"
LABELS = ["negative", "positive"]
METHOD, RANK = "metas_peft", 8
OPEN, CLOSED = 3.0, -5.0  # log_alpha: deterministic gate exactly 1 / exactly 0
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512, type_vocab_size=2)


def have_asset() -> bool:
    return (MODEL_DIR / "model.safetensors").is_file()


def backbone() -> torch.nn.Module:
    torch.manual_seed(0)  # the classifier is new either way
    if have_asset():
        return BertForSequenceClassification.from_pretrained(str(MODEL_DIR), num_labels=len(LABELS))
    return BertForSequenceClassification(AutoConfig.for_model("bert", **MINILM, num_labels=len(LABELS)))


def block_params(model: torch.nn.Module) -> int:
    """Parameters in the transformer blocks (embeddings, pooler and classifier left out)."""
    return count_params(model.bert.encoder.layer)


def export(pruned: bool, folder: Path) -> torch.nn.Module:
    """The gated model with its gates set, hardened, exported to `folder` and reloaded."""
    model = backbone()
    method = get_method(METHOD)({"rank": RANK, "alpha": 2 * RANK}, 1.0, "classification", 1, {})
    # The gates and LoRA without a cost model (as `load` builds them): nothing here trains.
    ranks = {name: RANK for name, _ in model.named_modules() if name.split(".")[-1] in ("query", "value")}
    model = method._wrap(model, ranks)
    bank = method.bank
    with torch.no_grad():
        for module in method.modules.values():
            module.lora_B.normal_(0, 0.02)
        heads = bank.heads.log_alpha.shape[1]
        bank.layers.log_alpha.fill_(OPEN)
        bank.heads.log_alpha.fill_(OPEN)
        bank.ranks.log_alpha.fill_(OPEN)
        if pruned:
            bank.layers.log_alpha[1::2] = CLOSED
            bank.heads.log_alpha[:, heads // 2:] = CLOSED
            bank.ranks.log_alpha[:, RANK // 2:] = CLOSED
    hardened = method.harden(model)
    card = method.export(hardened, folder)
    (folder / "export.json").write_text(json.dumps({"method": METHOD, **card}))
    return load_export(folder, "classification", LABELS)


def timed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    started = time.perf_counter()
    model(**batch)
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 48, 128, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2 lengths, 1 warm-up pass, 3 rounds")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.warmup, args.repeats = args.lengths[:2], 1, 3

    hf_logging.set_verbosity_error()  # the new classifier's load report, twice
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: export(name == "pruned", Path(tmp) / name).eval() for name in ("unpruned", "pruned")}
    weights = (f"MiniLM-L6-H384 weights ({MODEL_DIR.relative_to(ROOT)})" if have_asset()
               else "random weights from MiniLM-L6-H384's config (asset missing)")
    params = {name: count_params(model) for name, model in models.items()}
    blocks = {name: block_params(model) for name, model in models.items()}
    result = {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "weights": weights, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats,
        "configurations": {
            "unpruned": "6 layers, 12 heads, LoRA rank 8 on query/value (unmerged), every gate open",
            "pruned": "3 of 6 layers (every other), 6 of 12 heads per kept layer, LoRA rank 4 of 8",
        },
        "kept_layers": {name: m.config.num_hidden_layers for name, m in models.items()},
        "params": params, "params_ratio": params["pruned"] / params["unpruned"],
        "block_params": blocks, "block_params_ratio": blocks["pruned"] / blocks["unpruned"], "lengths": {},
    }
    print(f"{result['weights']}; batch {args.batch}; {args.repeats} rounds after {args.warmup} warm-up passes; "
          f"1 thread, torch {torch.__version__}")
    print(f"parameters: unpruned {params['unpruned']:,}, pruned {params['pruned']:,} "
          f"(ratio {result['params_ratio']:.3f}; the {params['unpruned'] - blocks['unpruned']:,} outside the blocks "
          f"stay); in the blocks "
          f"{blocks['unpruned']:,} and {blocks['pruned']:,} (ratio {result['block_params_ratio']:.3f})")
    print(f"{'tokens':>7} {'unpruned ms':>12} {'pruned ms':>10} {'pruned/unpruned':>16}")
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for length in args.lengths:
            ids = torch.randint(1000, MINILM["vocab_size"], (args.batch, length), generator=gen)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            for model in models.values():
                for _ in range(args.warmup):
                    model(**batch)
            times = {name: [] for name in models}
            for round_ in range(args.repeats):
                order = list(models) if round_ % 2 == 0 else list(reversed(models))
                for name in order:
                    times[name].append(timed(models[name], batch))
            ratios = [p / u for p, u in zip(times["pruned"], times["unpruned"])]
            row = {f"{name}_ms": statistics.median(values) for name, values in times.items()}
            row |= {f"{name}_range_ms": [min(values), max(values)] for name, values in times.items()}
            row["latency_ratio"] = statistics.median(ratios)
            result["lengths"][str(length)] = row
            print(f"{length:>7} {row['unpruned_ms']:>12.2f} {row['pruned_ms']:>10.2f} {row['latency_ratio']:>16.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
