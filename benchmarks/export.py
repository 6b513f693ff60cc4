"""Torch eager float32 against ONNX Runtime float32, int8 dynamic and int8 static, and the AOTInductor package
(float32; bfloat16 with --aoti-bf16) on this CPU (random weights).

    .venv/bin/python benchmarks/export.py [--arch sapiens2_tiny] [--task seg] [--size 512x384] [--repeats 3]

Exports the model (float32, int8 dynamic, int8 static calibrated on a few synthetic humans; AOTInductor compiled for
this CPU), then times one image per forward, interleaving the runtimes round by round so that a busy machine slows
them alike; prints the best wall time of ``--repeats`` per runtime and the median process CPU time per forward
(all threads: the work done, less sensitive to a busy machine than wall time), each as a ratio against torch
measured in the same run, the exported file sizes,
the load average, the CPU's vector features (AVX2 / AVX-512 VNNI / AMX decide what int8 can gain), and the relative
L2 error of each ONNX output against torch's. Threads: torch and ONNX Runtime both use ``--threads`` (default: all).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def cpu_features() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    have = set(flags.split(":", 1)[1].split())
    return ", ".join(f for f in wanted if f in have) or "none of " + ", ".join(wanted)


def main() -> int:
    from sapiens2.data.synth import write_dataset
    from sapiens2.export import export_model, load_exported
    from sapiens2.models.backbone import build_backbone
    from sapiens2.models.task_model import build_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sapiens2_tiny")
    p.add_argument("--task", default="seg", help="a task, or backbone")
    p.add_argument("--size", default="512x384")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--skip-static", action="store_true")
    p.add_argument("--skip-aoti", action="store_true", help="no AOTInductor package (compiling takes minutes)")
    p.add_argument("--aoti-bf16", action="store_true", help="also an AOTInductor bfloat16 package")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (build_backbone(args.arch, img_size=(h, w)) if args.task == "backbone"
             else build_model(args.task, args.arch, img_size=(h, w))).eval()
    folder = Path(tempfile.mkdtemp(prefix="sapiens2-bench-export-"))
    calib = write_dataset(folder / "calib", num=8, seed=0, height=h, width=w, max_people=1, progress=False)
    variants = {"onnx fp32": ({}, folder / "fp32.onnx"), "onnx int8 dynamic": ({"dtype": "int8"}, folder / "dyn.onnx")}
    if not args.skip_static:
        variants["onnx int8 static"] = ({"dtype": "int8", "calibrate": calib / "images"}, folder / "static.onnx")
    if not args.skip_aoti:
        variants["aoti fp32"] = ({"format": "aoti"}, folder / "fp32.pt2")
    if args.aoti_bf16:
        variants["aoti bf16"] = ({"format": "aoti", "dtype": "bfloat16"}, folder / "bf16.pt2")
    runners = {"torch fp32": model}
    for name, (options, path) in variants.items():
        start = time.perf_counter()
        export_model(model, path, **{"format": "onnx", "batch": 1, **options})
        size = path.stat().st_size
        print(f"exported {name}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.0f} s", flush=True)
        runners[name] = load_exported(path, threads=args.threads)
    x = torch.randn(1, 3, h, w)
    best = {name: float("inf") for name in runners}
    cpu = {name: [] for name in runners}
    outs = {}
    for _ in range(args.repeats + 1):  # the first round warms up (not counted)
        for name, run in runners.items():
            with torch.inference_mode():
                start, start_cpu = time.perf_counter(), time.process_time()
                out = run(x)
                elapsed, used = time.perf_counter() - start, time.process_time() - start_cpu
            outs[name] = out if isinstance(out, tuple) else (out,)
            if _ > 0:
                best[name] = min(best[name], elapsed)
                cpu[name].append(used)
    ref = outs["torch fp32"]
    print(f"\n{args.arch} {args.task} {h}x{w}, batch 1, {args.threads} threads, best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f}; CPU features: {cpu_features()}")
    cpu = {name: float(np.median(times)) for name, times in cpu.items()}
    print(f"{'runtime':<20} {'wall ms':>9} {'vs torch':>9} {'CPU ms':>9} {'vs torch':>9} {'rel. L2 err':>12}")
    for name in runners:
        err = max(float((a.double() - b.double()).norm() / b.double().norm()) for a, b in zip(outs[name], ref))
        print(f"{name:<20} {best[name] * 1e3:>9.1f} {best['torch fp32'] / best[name]:>8.2f}x {cpu[name] * 1e3:>9.1f} "
              f"{cpu['torch fp32'] / cpu[name]:>8.2f}x {err:>12.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
