"""GPU energy benchmark: a Llama-2-7B-shaped forward pass and joules per FLOP of int8 / bf16 GEMMs.

    python bench/gpu_energy.py                       # all of it, defaults below
    python bench/gpu_energy.py --skip-llama --gemm-sizes 4096x4096x4096

(a) Builds a model with Llama-2-7B's sizes (LlamaConfig: hidden 4096, 11008 MLP,
    32 layers, 32 heads, vocabulary 32000) and random weights in bf16 on CUDA, and
    profiles a forward pass over a batch of random prompts with `profile_workload`
    (5 repeats by default), printing J/sample (gross and idle-subtracted) and its CV.
(b) Measures joules per FLOP of int8 (`torch._int_mm`) and bf16 GEMMs at a few
    sizes, each window about --gemm-window-s long, and prints a table.

Writes bench/results/gpu_energy_<device>.json with the exact command. Needs a CUDA
GPU: without one it says so, exits with status 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from wattpeft.energy import device_info, device_slug, make_meter, profile_workload
from wattpeft.energy.gemm import measure_joules_per_flop
from wattpeft.utils.io import write_json

DEFAULT_GEMM_SIZES = "1024x4096x4096,4096x4096x4096,4096x4096x11008,8192x8192x8192"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--batch", type=int, default=8, help="prompts per forward pass")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per prompt")
    p.add_argument("--num-layers", type=int, default=32, help="Llama-2-7B has 32")
    p.add_argument("--warmup-iters", type=int, default=3)
    p.add_argument("--window-iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--cooldown-seconds", type=float, default=10.0)
    p.add_argument("--gemm-sizes", default=DEFAULT_GEMM_SIZES, help="comma-separated MxKxN")
    p.add_argument("--gemm-window-s", type=float, default=5.0, help="target length of each GEMM window")
    p.add_argument("--skip-llama", action="store_true")
    p.add_argument("--skip-gemm", action="store_true")
    return p.parse_args(argv)


def llama_7b_config(num_layers: int = 32):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )


def build_random_llama(config, device: str):
    """Random weights, created directly in bf16 on `device` (no fp32 copy of 7B parameters)."""
    from transformers import LlamaForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype=torch.bfloat16).eval()


def profile_llama(meter, args) -> dict[str, Any]:
    config = llama_7b_config(args.num_layers)
    model = build_random_llama(config, meter.device)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, config.vocab_size, (args.batch, args.seq_len), generator=generator).to(meter.device)

    @torch.inference_mode()
    def forward() -> None:
        model(input_ids=prompts, use_cache=False)

    result = profile_workload(
        forward,
        samples_per_iter=args.batch,
        tokens_per_iter=args.batch * args.seq_len,
        meter=meter,
        warmup_iters=args.warmup_iters,
        window_iters=args.window_iters,
        repeats=args.repeats,
        idle_seconds=args.idle_seconds,
        cooldown_seconds=args.cooldown_seconds,
    )
    parameters = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    return {"parameters": parameters, "config": config.to_dict(), "summary": result.summary, "rows": result.rows}


def measure_idle_w(meter, seconds: float) -> float:
    with meter.window("idle") as idle:
        time.sleep(seconds)
    return idle.mean_power_w


def gemm_table(meter, sizes: list[tuple[int, int, int]], window_s: float, idle_w: float) -> list[dict[str, Any]]:
    rows = []
    for dtype in ("int8", "bf16"):
        for m, k, n in sizes:
            probe = measure_joules_per_flop(meter, dtype, m, k, n, iters=10)
            iters = max(10, math.ceil(window_s / (probe["seconds"] / 10)))
            rows.append(measure_joules_per_flop(meter, dtype, m, k, n, iters=iters, idle_w=idle_w))
    return rows


def print_llama(llama: dict[str, Any]) -> None:
    s = llama["summary"]
    print(f"\nLlama-2-7B-shaped forward ({llama['parameters'] / 1e9:.2f} B parameters), source {s['source']}")
    print(f"  idle power            {s['idle_w']:.1f} W")
    print(f"  J/sample gross / net  {s['j_per_sample_gross_mean']:.3f} / {s['j_per_sample_net_mean']:.3f}")
    print(f"  CV of J/sample        {s['j_per_sample_cv']:.4f} over {s['repeats']} repeats")
    print(f"  latency p50 / p99     {s['batch_latency_p50_ms']:.1f} / {s['batch_latency_tail_ms']:.1f} (p{s['batch_latency_tail_pct']:g}) ms per batch")
    print(f"  CV of latency         {s['latency_cv']:.4f}")
    print(f"  tokens/s, peak power  {s['throughput_tokens_per_s']:.0f}, {s['peak_power_w_max']:.0f} W")
    if s["flags"]:
        print(f"  flags                 {s['flags']}")


def print_gemm(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'dtype':>5} {'M x K x N':>20} {'iters':>7} {'s':>7} {'TFLOP/s':>8} {'pJ/FLOP':>8} {'net':>8} source")
    for r in rows:
        shape = f"{r['m']}x{r['k']}x{r['n']}"
        print(
            f"{r['dtype']:>5} {shape:>20} {r['iters']:>7} {r['seconds']:>7.2f} {r['flops_per_s'] / 1e12:>8.1f} "
            f"{r['j_per_flop'] * 1e12:>8.3f} {r['j_per_flop_net'] * 1e12:>8.3f} {r['source']}"
        )


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in size.lower().split("x")) for size in text.split(",") if size]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_energy.py needs a CUDA GPU and torch with CUDA; none is visible. Nothing written.", file=sys.stderr)
        return 2
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["bench/gpu_energy.py", *argv])
    meter = make_meter("cuda")
    slug = device_slug(meter=meter)
    record: dict[str, Any] = {"command": command, "device": device_info(meter), "created_unix": time.time()}
    if not args.skip_llama:
        record["llama"] = profile_llama(meter, args)
        print_llama(record["llama"])
    if not args.skip_gemm:
        idle_w = measure_idle_w(meter, args.idle_seconds)
        record["gemm_idle_w"] = idle_w
        record["gemm"] = gemm_table(meter, parse_sizes(args.gemm_sizes), args.gemm_window_s, idle_w)
        print_gemm(record["gemm"])
    meter.close()
    out = args.out_dir / f"gpu_energy_{slug}.json"
    write_json(out, record)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
