"""Throughput of the synthetic-humans generator at 256x192 (the bar: >= 20 samples/s on 2 CPU cores).

Baseline measured in the same run: one process. Then two worker processes (the 2-core figure), and the same with
writing every sample to disk. Timings on a shared machine are noisy; the load average is printed.

    python benchmarks/synth.py [--num 120] [--height 256] [--width 192]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from sapiens2.data.synth.render import generate_sample
from sapiens2.data.synth.writer import write_dataset


def _one(job: tuple[int, int, int]) -> int:
    index, height, width = job
    return int(generate_sample(0, index, height, width)["mask"].sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=120)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=192)
    args = ap.parse_args()
    jobs = [(i, args.height, args.width) for i in range(args.num)]
    _one(jobs[0])  # warm caches (face landmark charts, imports)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    t = time.perf_counter()
    for j in jobs:
        _one(j)
    single = args.num / (time.perf_counter() - t)
    print(f"1 process : {single:6.1f} samples/s  (baseline)")

    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_one, jobs[:4]))
        t = time.perf_counter()
        list(pool.map(_one, jobs, chunksize=4))
        double = args.num / (time.perf_counter() - t)
    print(f"2 processes: {double:6.1f} samples/s  ({double / single:.2f}x baseline)")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_dataset(tmp, args.num, height=args.height, width=args.width, workers=2, progress=False)
        written = args.num / (time.perf_counter() - t)
    print(f"2 processes + writing to disk: {written:6.1f} samples/s  ({written / single:.2f}x baseline)")
    print(f"bar: 20 samples/s on 2 cores -> {'PASS' if double >= 20 else 'BELOW'} ({double / 20:.2f}x)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
