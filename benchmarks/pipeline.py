"""Share of the ``sapiens2 predict`` job's wall time spent outside the model's forward pass.

    .venv/bin/python benchmarks/pipeline.py [--arch sapiens2_0.1b] [--num-images 8] [--tasks pose,seg,...]
                                            [--device auto] [--dtype float32] [--batch-size 4] [--repeats 3]
                                            [--profile]

For each task: writes ``--num-images`` JPEGs (half 1024x768, half of other sizes) to a temporary folder, builds
a randomly initialised task model of ``--arch`` at ``--input-size`` (1024x768), and runs the real batch job
(:class:`sapiens2.serving.PredictJob` with the real Predictor: reading, preprocessing, forward, decoding,
writing every output file) in-process. The baseline is the forward time the Predictor reports
(``Prediction.timings["forward"]``) measured in the same run; the share outside it is
``1 - forward / wall``. The bar is below 10%. ``--profile`` prints where the rest goes (cProfile, top
functions by own time, the forward pass included, so compare against it).

A warm-up run on one image precedes the timed runs (first-call allocator and kernel selection costs); with
``--repeats N`` each task is timed N times and the run with the lowest share is reported. The per-stage columns are
the job summary's ``stage_s`` (seconds summed over images): ``read`` and ``write`` are busy time on the reader and
writer pools (beside the model, not on its thread), ``wait`` the job's thread waiting for them; ``post`` is
mostly beside the next batch's forward (the Predictor runs the model on a worker thread meanwhile; the last
batch's post-processing is not overlapped); a column is blank where the code measured has no such stage. ``outside s`` is wall minus
forward: on a loaded machine the forward slows and the share falls, the seconds do not. The load average is
printed with the table (shared machines).
On a CPU the forward pass dominates; on a GPU the rest of the pipeline has to keep up with it.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting")
OTHER_SIZES = ((720, 1280), (480, 640), (1080, 1920), (1536, 1024))


def write_images(folder: Path, count: int, mixed: bool, seed: int = 0) -> list[Path]:
    """Smooth random colour images (decode/encode costs like photos, unlike flat or white-noise images)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        h, w = OTHER_SIZES[(i // 2) % len(OTHER_SIZES)] if (mixed and i % 2) else (1024, 768)
        small = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))
        paths.append(folder / f"img{i:03d}.jpg")
        cv2.imwrite(str(paths[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return paths


def build_predictor(task: str, arch: str, input_size: tuple[int, int], args):
    import torch

    from sapiens2.models.task_model import build_model
    from sapiens2.inference.predictor import Predictor

    torch.manual_seed(0)
    model = build_model(task, arch, img_size=input_size)
    kwargs = dict(model={task: model}, device=args.device, dtype=args.dtype, input_size=input_size)
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    if task == "pose":
        kwargs["detector"] = "none"  # one whole-image crop per image: synthetic images have no people
    return Predictor([task], **kwargs)


def run_job(predictor, task: str, inputs: Path, output: Path):
    from sapiens2.io import discover_inputs
    from sapiens2.serving import OutputOptions, PredictJob

    job = PredictJob(predictor, [task], output, OutputOptions(), overwrite=True)
    items = discover_inputs(inputs).items
    start = time.perf_counter()
    summary = job.run(items)
    wall = time.perf_counter() - start
    if summary.failed:
        raise RuntimeError(f"{task}: {len(summary.failed)} input(s) failed: {summary.failed[0]}")
    return summary, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sapiens2_0.1b", help="sapiens2_tiny for a quick run")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--input-size", default="1024x768", help="model input HxW")
    p.add_argument("--fixed-size", action="store_true", help="all images 1024x768 (default: half of other sizes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per task; the lowest share is reported")
    p.add_argument("--profile", action="store_true", help="cProfile each timed job and print the top functions")
    args = p.parse_args()
    input_size = tuple(int(v) for v in args.input_size.lower().split("x"))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]

    work = Path(tempfile.mkdtemp(prefix="s2-pipeline-"))
    try:
        write_images(work / "in", args.num_images, mixed=not args.fixed_size)
        write_images(work / "warm", 1, mixed=False, seed=1)
        rows = []
        for task in tasks:
            predictor = build_predictor(task, args.arch, input_size, args)
            run_job(predictor, task, work / "warm", work / "warm-out")
            best = None
            for _ in range(max(1, args.repeats)):
                profiler = cProfile.Profile() if args.profile else None
                if profiler:
                    profiler.enable()
                summary, wall = run_job(predictor, task, work / "in", work / "out" / task)
                if profiler:
                    profiler.disable()
                stages = summary.stage_s
                forward = stages.get("forward", 0.0)
                share = 1.0 - forward / wall if wall > 0 else float("nan")
                print(f"{task}: {summary.images} images in {wall:.2f} s, forward {forward:.2f} s, outside {share:.1%}; "
                      + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
                      + f"; load {' '.join(f'{v:.1f}' for v in os.getloadavg())}", file=sys.stderr)
                if best is None or share < best[-1]:
                    best = (task, summary.images, wall, forward, dict(stages), share)
            rows.append(best)
            if profiler:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
                print(f"--- profile: {task} ---\n{text.getvalue()}")
            del predictor
        print(f"\narch {args.arch}, input {input_size[0]}x{input_size[1]}, {args.num_images} images "
              f"({'1024x768' if args.fixed_size else 'mixed sizes'}), device {args.device}, dtype {args.dtype}")
        print(f"best of {max(1, args.repeats)} run(s) per task; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        columns = ("read", "load", "pre", "forward", "post", "write", "wait_read", "wait_write")
        print(f"{'task':9} {'images':>6} {'wall s':>7} " + " ".join(f"{c:>10}" for c in columns)
              + f" {'outside s':>9} {'outside forward':>15}")
        for task, n, wall, forward, stages, share in rows:
            flag = "" if share <= 0.10 else "  (above the 10% bar)"
            cells = " ".join(f"{stages[c]:>10.2f}" if c in stages else f"{'':>10}" for c in columns)
            # the seconds outside the forward pass: on a loaded machine the forward slows and the share falls
            print(f"{task:9} {n:>6} {wall:>7.2f} {cells} {wall - forward:>9.2f} {share:>14.1%}{flag}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
