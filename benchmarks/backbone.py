"""Backbone throughput on this machine, as a share of its own float32 matrix-multiply speed.

    .venv/bin/python benchmarks/backbone.py [--arch sapiens2_0.1b] [--size 1024x768] [--repeats 3]

Counts the forward pass's floating-point operations with torch's FlopCounterMode, times it, and divides
the achieved GFLOP/s by the GFLOP/s of a plain float32 matmul measured in the same run (interleaved with
the model runs, so a busy machine slows both alike). The headline ratio compares the fastest model run with the
fastest matmul run: interference from other work on a shared machine only ever slows a run, so the best of
several is each one's estimate of what the machine can do (the ratio of the medians is printed beside it).
Also prints peak resident memory, and where the time can go: the share of the FLOPs in attention, the GFLOP/s of
torch's attention kernel at the model's shape, and the ratio the model would reach if its matrix products ran
at the matmul speed and its attention at that kernel's speed (the ceiling set by the kernels, not by this code).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import sapiens2


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one: count QK^T and AV.
    b, h, nq, d = query_shape
    nk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * nq * nk * d + 2 * b * h * nq * nk * dv


ATTENTION_OP = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
FLOP_FORMULAS = {ATTENTION_OP: _cpu_flash_attention_flops}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / scale / 1024


def best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(sizes=(2048, 3072), repeats: int = 3) -> float:
    """The machine's float32 matmul speed: best of a few runs at the sizes where it peaks."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best = max(best, 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9)
    return best


def attention_gflops(batch: int, heads: int, tokens: int, head_dim: int, repeats: int = 3) -> float:
    """torch's CPU attention kernel alone at the model's shape: best of a few runs, QK^T and AV counted."""
    q, k, v = (torch.randn(batch, heads, tokens, head_dim) for _ in range(3))
    seconds = best_seconds(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), repeats)
    return 4 * batch * heads * tokens * tokens * head_dim / seconds / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sapiens2_0.1b")
    p.add_argument("--size", default="1024x768", help="HxW")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tokenizer", action="store_true")
    p.add_argument("--compile", action="store_true",
                   help="time torch.compile(model) (inductor fuses the elementwise work between the products)")
    args = p.parse_args()
    h, w = (int(s) for s in args.size.lower().split("x"))

    torch.manual_seed(0)
    model = sapiens2.build_backbone(args.arch, img_size=(h, w), use_tokenizer=args.tokenizer).eval()
    x = torch.randn(1, 3, h, w)
    rss_before = rss_mib()
    with torch.inference_mode():
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
            model(x)  # also the warm-up
        flops = counter.get_total_flops()
        attn_flops = counter.get_flop_counts()["Global"].get(ATTENTION_OP, 0)
        if args.compile:
            t = time.perf_counter()
            run = torch.compile(model)
            run(x)  # compiles
            print(f"torch.compile: {time.perf_counter() - t:.0f} s to compile")
        else:
            run = model
        model_times, mm_rates = [], []
        for _ in range(args.repeats):
            mm_rates.append(matmul_gflops())
            t = time.perf_counter()
            run(x)
            model_times.append(time.perf_counter() - t)
    model_rate = flops / min(model_times) / 1e9
    mm_rate = max(mm_rates)
    grid_h, grid_w = model.grid_size(h, w)
    tokens = model.num_prefix_tokens + grid_h * grid_w
    with torch.inference_mode():
        attn_rate = attention_gflops(1, model.arch.num_heads, tokens, model.arch.head_dim)
    ceiling = flops / ((flops - attn_flops) / mm_rate + attn_flops / attn_rate) / mm_rate
    median_ratio = flops / statistics.median(model_times) / 1e9 / statistics.median(mm_rates)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    label = args.arch + (" +tokenizer" if args.tokenizer else "") + (" (torch.compile)" if args.compile else "")
    print(f"{label} at {h}x{w}: {flops / 1e9:.1f} GFLOP per image, "
          f"{min(model_times):.2f} s best of {args.repeats} (median {statistics.median(model_times):.2f})")
    print(f"backbone  {model_rate:8.1f} GFLOP/s (best run)")
    print(f"matmul    {mm_rate:8.1f} GFLOP/s (square 2048/3072 float32, best run)")
    print(f"ratio     {model_rate / mm_rate:8.2f}  (backbone / matmul, best runs; 0.9 is the bar); "
          f"medians: {median_ratio:.2f}")
    print(f"attention {attn_flops / flops:8.0%}  of the FLOPs; torch's attention kernel alone at the blocks' "
          f"N={tokens}: {attn_rate:.1f} GFLOP/s = {attn_rate / mm_rate:.2f} of matmul")
    print(f"ceiling   {ceiling:8.2f}  (the ratio if every other product ran at matmul speed and attention at the "
          f"kernel's)")
    print(f"memory    peak RSS {peak_rss_mib():.0f} MiB, {rss_before:.0f} MiB after building the model")


if __name__ == "__main__":
    main()
