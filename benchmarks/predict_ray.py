"""``sapiens2 predict --engine ray`` against the local job, in the same run, on the same images (tiny arch, random
weights: nothing is downloaded): images/s of the local job, of Ray with 1 worker and with 2 workers, as ratios.

    python benchmarks/predict_ray.py [--images 16,64] [--size 96x72] [--input-size 128x96] [--repeats 2] [--threads 1]

Each figure is the best of ``--repeats`` runs (outputs removed between runs, the variants interleaved so a change
of load hits them alike). Every run is timed whole: building the model (in the local job, and in each Ray worker)
and Ray's start-up are inside; Ray's own start (``ray.init``) is not. With two image counts the **marginal** rate
is printed too: (n2 - n1) / (t2 - t1), the cost of one more image once the fixed start-up is paid, which is what a
run over millions of images gets. A profile of the largest Ray runs splits their wall time into the workers'
start (building the predictor), decode, model, write and the rest (Ray: scheduling, actor processes, transfers).

Goals of issue 17: overhead at one worker <= 10% (ratio >= 0.9), two workers >= 1.6x one on 2 cores. Timings on
a shared machine are noisy: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TASKS = ("pose", "seg")
MODEL_STAGES = ("load", "pre", "forward", "post")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="16,64", help="image counts, comma-separated (two: marginal rates too)")
    ap.add_argument("--size", default="96x72", help="HxW of the input images")
    ap.add_argument("--input-size", default="128x96", help="model input HxW")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of the local job and of each Ray worker (default: all CPUs for the local "
                         "job, the CPUs divided among the Ray workers)")
    args = ap.parse_args(argv)
    import ray
    import torch

    from conftest import write_tiny_checkpoints
    from sapiens2.inference.predictor import Predictor
    from sapiens2.io import discover_inputs
    from sapiens2.serving import PredictJob
    from sapiens2.serving.ray_engine import RayOptions, predict_ray

    counts = sorted({int(n) for n in args.images.split(",")})
    h, w = map(int, args.size.split("x"))
    ih, iw = map(int, args.input_size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="s2-bench-ray-"))
    try:
        (root / "ckpt").mkdir()
        checkpoints = write_tiny_checkpoints(root / "ckpt", TASKS, (ih, iw))
        photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"))
        for n in counts:
            (root / f"in{n}").mkdir()
            for k in range(n):  # the photo at slightly different sizes: no two inputs alike
                cv2.imwrite(str(root / f"in{n}" / f"{k:04d}.jpg"), cv2.resize(photo, (w + k % 5, h + k % 7)))
        kwargs = dict(model={t: str(p) for t, p in checkpoints.items()}, device="cpu", input_size=(ih, iw),
                      detector="none", batch_size=4)

        def local(n: int) -> tuple[float, dict]:
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
            items = discover_inputs([root / f"in{n}"]).items
            start = time.perf_counter()
            predictor = Predictor(list(TASKS), **kwargs)
            built = time.perf_counter() - start
            summary = PredictJob(predictor, TASKS, root / "out").run(items)
            assert summary.done == n, summary.lines()
            return time.perf_counter() - start, {"model build": built, **summary.stage_s}

        def on_ray(n: int, workers: int) -> tuple[float, dict]:
            start = time.perf_counter()
            summary = predict_ray([root / f"in{n}"], root / "out", TASKS, kwargs,
                                  engine=RayOptions(workers=workers, shard_size=args.shard_size,
                                                    threads_per_worker=args.threads))
            assert summary.done == n, summary.lines()
            return time.perf_counter() - start, dict(summary.stage_s)

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        variants = (("local", lambda n: local(n)), ("ray, 1 worker", lambda n: on_ray(n, 1)),
                    ("ray, 2 workers", lambda n: on_ray(n, 2)))
        best: dict[tuple[str, int], tuple[float, dict]] = {}
        for _ in range(args.repeats):
            for n in counts:
                for name, run in variants:
                    shutil.rmtree(root / "out", ignore_errors=True)
                    seconds, stages = run(n)
                    if seconds < best.get((name, n), (float("inf"), {}))[0]:
                        best[(name, n)] = (seconds, stages)
        ray.shutdown()
        print(f"images {h}x{w}, model input {ih}x{iw}, tasks {','.join(TASKS)}, sapiens2_tiny, {os.cpu_count()} "
              f"CPU(s), torch threads {args.threads or 'default'}, shard size {args.shard_size}, best of "
              f"{args.repeats}; load average {tuple(round(x, 1) for x in os.getloadavg())}")
        for n in counts:
            rates = {name: n / best[(name, n)][0] for name, _ in variants}
            print(f"{n} images (whole runs, start-up included):")
            for name, rate in rates.items():
                print(f"  {name:15s} {rate:7.2f} images/s  ({best[(name, n)][0]:.1f} s)")
            print(f"  ray 1 worker / local:     {rates['ray, 1 worker'] / rates['local']:.2f}  (goal >= 0.90)")
            print(f"  ray 2 workers / 1 worker: {rates['ray, 2 workers'] / rates['ray, 1 worker']:.2f}  (goal >= 1.6)")
        if len(counts) > 1:
            n1, n2 = counts[0], counts[-1]
            extra = {name: best[(name, n2)][0] - best[(name, n1)][0] for name, _ in variants}
            print(f"marginal rate, images {n1} -> {n2} (start-up excluded):")
            if min(extra.values()) <= 0:  # more images took less time: the load changed more than the work
                print("  not measurable in this run (a larger run was faster than a smaller one: the machine's load "
                      "changed); use more images or more repeats")
            else:
                marginal = {name: (n2 - n1) / seconds for name, seconds in extra.items()}
                for name, rate in marginal.items():
                    fixed = best[(name, n1)][0] - n1 / rate
                    print(f"  {name:15s} {rate:7.2f} images/s, fixed cost {fixed:5.1f} s")
                print(f"  ray 1 worker / local:     {marginal['ray, 1 worker'] / marginal['local']:.2f}  "
                      "(goal >= 0.90)")
                print(f"  ray 2 workers / 1 worker: {marginal['ray, 2 workers'] / marginal['ray, 1 worker']:.2f}  "
                      "(goal >= 1.6)")
        n = counts[-1]
        print(f"where the time goes, {n} images (stage seconds; Ray's summed over its workers):")
        for name, _ in variants:
            seconds, stages = best[(name, n)]
            model = sum(stages.get(k, 0.0) for k in MODEL_STAGES)
            parts = {k: v for k, v in stages.items() if k not in MODEL_STAGES}
            print(f"  {name:15s} wall {seconds:6.1f} s, model {model:6.1f} s, "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
