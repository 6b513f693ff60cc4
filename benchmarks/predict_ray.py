"""``sapiens2 predict --engine ray`` against the local job, in the same run, on the same images (tiny arch, random
weights: nothing is downloaded): images/s of the local job, of Ray with 1 worker and with 2 workers, as ratios.

    python benchmarks/predict_ray.py [--images 48] [--size 96x72] [--input-size 128x96] [--repeats 2] [--threads 1]

Each figure is the best of ``--repeats`` runs (outputs removed between runs); Ray's start-up and the workers' model
loading are inside the Ray figures (they are part of a real run), Ray's own start (``ray.init``) is not. Goals of
issue 17: overhead at one worker <= 10% (ratio >= 0.9), two workers >= 1.6x one on 2 cores. Timings on a shared
machine are noisy: the load average is printed with them.
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
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

    h, w = map(int, args.size.split("x"))
    ih, iw = map(int, args.input_size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="s2-bench-ray-"))
    try:
        (root / "ckpt").mkdir()
        checkpoints = write_tiny_checkpoints(root / "ckpt", TASKS, (ih, iw))
        photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"))
        (root / "in").mkdir()
        for k in range(args.images):  # the photo at slightly different sizes: no two inputs alike
            cv2.imwrite(str(root / "in" / f"{k:04d}.jpg"), cv2.resize(photo, (w + k % 5, h + k % 7)))
        kwargs = dict(model={t: str(p) for t, p in checkpoints.items()}, device="cpu", input_size=(ih, iw),
                      detector="none", batch_size=4)
        items = discover_inputs([root / "in"]).items

        def local() -> float:
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
            start = time.perf_counter()
            summary = PredictJob(Predictor(list(TASKS), **kwargs), TASKS, root / "out").run(items)
            assert summary.done == args.images, summary.lines()
            return time.perf_counter() - start

        def on_ray(workers: int) -> float:
            start = time.perf_counter()
            summary = predict_ray([root / "in"], root / "out", TASKS, kwargs,
                                  engine=RayOptions(workers=workers, shard_size=args.shard_size,
                                                    threads_per_worker=args.threads))
            assert summary.done == args.images, summary.lines()
            return time.perf_counter() - start

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        best = {}
        for _ in range(args.repeats):  # interleaved, so a change of load hits every variant alike
            for name, run in (("local", local), ("ray, 1 worker", lambda: on_ray(1)),
                              ("ray, 2 workers", lambda: on_ray(2))):
                shutil.rmtree(root / "out", ignore_errors=True)
                best[name] = min(best.get(name, float("inf")), run())
        ray.shutdown()
        rates = {name: args.images / seconds for name, seconds in best.items()}
        print(f"{args.images} images {h}x{w}, model input {ih}x{iw}, tasks {','.join(TASKS)}, sapiens2_tiny, "
              f"{os.cpu_count()} CPU(s), torch threads {args.threads or 'default'}, best of {args.repeats}; "
              f"load average {os.getloadavg()}")
        for name, rate in rates.items():
            print(f"  {name:15s} {rate:7.2f} images/s  ({best[name]:.1f} s)")
        print(f"  ray 1 worker / local:    {rates['ray, 1 worker'] / rates['local']:.2f}  (goal >= 0.90)")
        print(f"  ray 2 workers / 1 worker: {rates['ray, 2 workers'] / rates['ray, 1 worker']:.2f}  (goal >= 1.6)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
