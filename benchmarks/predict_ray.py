"""``sapiens2 predict --engine ray`` against the local job, in the same run, on the same images (tiny arch, random
weights: nothing is downloaded): local ``predict``, Ray with 1 worker and Ray with 2 workers, each with its total
wall time, its start-up, its steady-state images/s and its CPU time per image, and the ratios.

    python benchmarks/predict_ray.py [--images 256] [--size 96x72] [--input-size 128x96] [--repeats 3] [--threads 1]

Start-up and steady state are measured inside each run. Local: start-up = building the predictor, steady state =
the images over the rest of the run. Ray: start-up = from the call until the last worker has built its model
(Ray's worker processes, their imports, the model: seconds, paid once per run), steady state = the images over the
window from then to the last shard's end (each shard counted in proportion to its time inside the window). The
steady-state rate is what a run over millions of images gets; the whole-run rate of a small run is mostly
start-up. Ray's own start (``ray.init``) is outside every figure.

CPU time per image (process CPU, not wall: what the machine's load does not change much) says whether the
mechanism scales: local = the benchmark process during the run (its reader and writer threads included); Ray =
the workers in their shards + the decode tasks + the driver + Ray's long-lived processes (raylet, GCS, task
workers) during the run. Two workers on two idle cores scale well when their CPU per image is about one worker's,
both workers were given work (the per-worker line) and about 2 were busy on average in the steady state (the mean
number of shards running at once: a dispatch figure, hardly changed by the machine's load).

``--threads 1`` (default): one torch and OpenCV thread for the local job and every Ray worker, so "2 workers vs 1"
measures Ray's scaling rather than torch's intra-op scaling; ``--threads 0``: the engines' defaults (all CPUs for
the local job and a single Ray worker, shared out among several). Each figure is the median of ``--repeats`` runs,
the variants interleaved so a change of load hits them alike; the load average is printed. Goals of issue 17:
overhead at one worker <= 10% (ratio >= 0.9), two workers >= 1.6x one on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TASKS = ("pose", "seg")
VARIANTS = ("local", "ray, 1 worker", "ray, 2 workers")


@dataclass
class Run:
    wall_s: float
    startup_s: float
    steady_rate: float  # images/s after start-up (nan when not reached)
    cpu_per_image_s: float
    notes: str = ""


def _descendant_cpu() -> dict[int, float]:
    """CPU seconds (user + sys) of every process below this one, by pid (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    below, frontier = {}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cpu) in stats.items():
            if ppid == parent and pid not in below:
                below[pid] = cpu
                frontier.append(pid)
    return below


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256, help="images per run (enough that the steady state dominates)")
    ap.add_argument("--size", default="96x72", help="HxW of the input images")
    ap.add_argument("--input-size", default="128x96", help="model input HxW")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenCV threads of the local job and of each Ray worker (0: the engines' defaults)")
    args = ap.parse_args(argv)
    import ray
    import torch

    from conftest import write_tiny_checkpoints
    from sapiens2.inference.predictor import Predictor
    from sapiens2.io import discover_inputs
    from sapiens2.serving import PredictJob
    from sapiens2.serving.ray_engine import RayOptions, predict_ray

    n = args.images
    h, w = map(int, args.size.split("x"))
    ih, iw = map(int, args.input_size.split("x"))
    threads = args.threads or None
    root = Path(tempfile.mkdtemp(prefix="s2-bench-ray-"))
    try:
        (root / "ckpt").mkdir()
        checkpoints = write_tiny_checkpoints(root / "ckpt", TASKS, (ih, iw))
        photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"))
        for folder, count in (("in", n), ("warm-up", 4)):
            (root / folder).mkdir()
            for k in range(count):  # the photo at slightly different sizes: no two inputs alike
                cv2.imwrite(str(root / folder / f"{k:04d}.jpg"), cv2.resize(photo, (w + k % 5, h + k % 7)))
        kwargs = dict(model={t: str(p) for t, p in checkpoints.items()}, device="cpu", input_size=(ih, iw),
                      detector="none", batch_size=4)

        def local() -> Run:
            torch.set_num_threads(threads or os.cpu_count() or 1)
            cv2.setNumThreads(threads or os.cpu_count() or 1)
            items = discover_inputs([root / "in"]).items
            start, cpu = time.perf_counter(), time.process_time()
            predictor = Predictor(list(TASKS), **kwargs)
            built = time.perf_counter() - start
            summary = PredictJob(predictor, TASKS, root / "out").run(items)
            wall = time.perf_counter() - start
            assert summary.done == n, summary.lines()
            return Run(wall, built, n / (wall - built), (time.process_time() - cpu) / n)

        def on_ray(workers: int, folder: str = "in") -> Run:
            before = _descendant_cpu()
            start = time.perf_counter()
            summary = predict_ray([root / folder], root / "out", TASKS, kwargs,
                                  engine=RayOptions(workers=workers, shard_size=args.shard_size,
                                                    threads_per_worker=threads))
            wall = time.perf_counter() - start
            after = _descendant_cpu()
            assert summary.done == len(list((root / folder).iterdir())), summary.lines()
            workers_pids = {int(name.rsplit(":", 1)[1]) for name in summary.worker_usage}  # counted by the summary
            system = sum(cpu - before[pid] for pid, cpu in after.items() if pid in before and pid not in workers_pids)
            worker = sum(u.cpu_s for u in summary.worker_usage.values())
            steady = summary.steady
            notes = (f"CPU/image: workers {1e3 * worker / n:.1f} ms, decode {1e3 * summary.decode_cpu_s / n:.1f}, "
                     f"driver {1e3 * summary.driver_cpu_s / n:.1f}, Ray processes {1e3 * system / n:.1f}; "
                     f"worker start CPU {sum(u.start_cpu_s for u in summary.worker_usage.values()):.1f} s; "
                     + (f"steady state {steady[1]:.1f} s, {steady[2]:.2f} workers busy on average; " if steady else "")
                     + "; ".join(f"worker {k + 1}: {u.shards} shards, {u.inputs} images, threads "
                                 f"{u.torch_threads}/{u.cv2_threads}"
                                 for k, u in enumerate(summary.worker_usage.values())))
            cpu = worker + summary.decode_cpu_s + summary.driver_cpu_s + system
            return Run(wall, summary.startup_s or 0.0, steady[0] if steady else float("nan"), cpu / n, notes)

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        warm = time.perf_counter()  # Ray Data's own actors (stats, autoscaling) start with a session's first dataset
        on_ray(1, "warm-up")
        print(f"first Ray run of the session (its one-time start, not counted below): "
              f"{time.perf_counter() - warm:.1f} s")
        shutil.rmtree(root / "out", ignore_errors=True)
        runs: dict[str, list[Run]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name, run in zip(VARIANTS, (local, lambda: on_ray(1), lambda: on_ray(2))):
                shutil.rmtree(root / "out", ignore_errors=True)
                runs[name].append(run())
        ray.shutdown()
        print(f"{n} images {h}x{w}, model input {ih}x{iw}, tasks {','.join(TASKS)}, sapiens2_tiny, {os.cpu_count()} "
              f"CPU(s), threads per worker {args.threads or 'default'}, shard size {args.shard_size}, median of "
              f"{args.repeats}; load average {tuple(round(x, 1) for x in os.getloadavg())}")
        med = {name: Run(*(statistics.median(getattr(r, f) for r in rs)
                           for f in ("wall_s", "startup_s", "steady_rate", "cpu_per_image_s")))
               for name, rs in runs.items()}
        print(f"  {'':15s} {'wall s':>7s} {'start-up s':>10s} {'steady img/s':>12s} {'whole-run img/s':>15s} "
              f"{'CPU ms/img':>10s}")
        for name, m in med.items():
            print(f"  {name:15s} {m.wall_s:7.1f} {m.startup_s:10.1f} {m.steady_rate:12.2f} {n / m.wall_s:15.2f} "
                  f"{1e3 * m.cpu_per_image_s:10.1f}")
        local_, one, two = (med[name] for name in VARIANTS)
        for label, a, b, goal in (("ray 1 worker / local,    ", local_, one, "0.90"),
                                  ("ray 2 workers / 1 worker,", one, two, "1.6")):
            print(f"  {label} steady state: {b.steady_rate / a.steady_rate:.2f}  (goal >= {goal}); whole run "
                  f"{a.wall_s / b.wall_s:.2f}; CPU per image {b.cpu_per_image_s / a.cpu_per_image_s:.2f}x")
        for name in VARIANTS[1:]:  # the last repeat's accounting
            print(f"  {name}: {runs[name][-1].notes}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
