"""Counted FLOPs and the device's measured matrix-multiply ceiling.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` while the model runs: matmuls, convolutions
and attention as 2 x multiply-accumulates (FLOPs, not MACs); element-wise work is not counted, so achieved FLOP/s
is a lower bound of the work done. The ceiling is the best FLOP/s of one large matmul timed on the same device, in
the same precision, in the same process (so it sees the same load and thread count as the model runs).
"""
from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CEILING_SIZE", "count_flops", "measure_matmul_ceiling"]

# Side of the square matmul timed for the ceiling: large enough to reach the kernel's peak, small enough to time
# quickly on a loaded 2-core CPU (2 GFLOP per product at 1024).
CEILING_SIZE = {"cpu": 1024, "cuda": 8192, "mps": 4096}


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` (it runs once, under inference mode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
    with torch.inference_mode(), counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _attention_formulas() -> dict:
    """torch's counter knows the CUDA attention kernels (flash, efficient, cuDNN) but not what the CPU dispatches
    to (``scaled_dot_product_attention`` reaches the counter whole, or as the CPU flash kernel): count those with
    torch's own attention formula (two batched matmuls, grouped-query heads broadcast)."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    ops = [aten.scaled_dot_product_attention]
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        ops.append(aten._scaled_dot_product_flash_attention_for_cpu)
    return dict.fromkeys(ops, formula)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_matmul_ceiling(device, dtype: str = "float32", size: int | None = None, repeats: int = 5,
                           seconds: float = 0.5) -> float:
    """Best FLOP/s of an ``n x n @ n x n`` product on ``device`` in ``dtype`` (float32, bfloat16, float16; int8:
    torch's dynamically quantised Linear, the kernel the int8 backend runs). Best of ``repeats`` timings, each of
    as many products as fill about ``seconds`` / repeats."""
    import torch

    device = torch.device(device)
    n = int(size or CEILING_SIZE.get(device.type, 1024))
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    if dtype == "int8":
        from sapiens2.profiling.backends import quantize_dynamic_int8

        layer = quantize_dynamic_int8(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)))
        a = a.to(device)

        def product():
            return layer(a)
    else:
        torch_dtype = getattr(torch, dtype)
        a = a.to(device=device, dtype=torch_dtype)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=torch_dtype)

        def product():
            return a @ b
    flops = 2 * n ** 3
    with torch.inference_mode():
        product()  # warm-up: kernel selection, allocations
        _sync(device)
        start = time.perf_counter()
        product()
        _sync(device)
        once = max(time.perf_counter() - start, 1e-6)
        per_repeat = max(1, int(seconds / max(1, repeats) / once))
        best = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            for _ in range(per_repeat):
                product()
            _sync(device)
            best = min(best, (time.perf_counter() - start) / per_repeat)
    return flops / best
