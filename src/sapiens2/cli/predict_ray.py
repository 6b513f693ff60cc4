"""The ``--engine`` options of ``sapiens2 predict`` and the dispatch to the Ray engine
(:mod:`sapiens2.serving.ray_engine`): same models, settings and output files as the local job."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from sapiens2.errors import UsageError

ENGINE_EPILOG = """
on Ray (--engine ray; a local Ray is started unless --address / RAY_ADDRESS names a cluster):
  sapiens2 predict --task pose --engine ray photos/ -o out/
  sapiens2 predict --task pose,seg --engine ray --format parquet --address ray://head:10001 list.txt -o out/
  inputs besides files and folders: WebDataset .tar shards (sapiens2 curate's), .txt / .parquet lists of paths or
  URIs, s3:// gs:// prefixes; OUT/manifest.parquet lists every input (status, reason, people, timings, outputs)"""


def add_engine_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("engine (batch inference on Ray Data)")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process (default); ray: Ray Data, decoding on CPU tasks and one model per "
                            "worker, resumable, with OUT/manifest.parquet")
    group.add_argument("--address", default="", metavar="ADDR",
                       help="Ray cluster to run on (default: RAY_ADDRESS, else a local Ray started for the run)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="model workers (default: one per GPU, else 1)")
    group.add_argument("--num-gpus-per-worker", type=float, default=None, metavar="G",
                       help="GPUs per worker (default 1 when the cluster has GPUs, else 0)")
    group.add_argument("--format", default="files", choices=("files", "parquet", "webdataset"),
                       help="files: the local job's files (default); parquet / webdataset: one file per shard "
                            "under OUT/predictions/")
    group.add_argument("--shard-size", type=int, default=16, metavar="N",
                       help="inputs per shard: the unit of work, commit and resume (default 16)")
    group.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                       help="torch threads of each CPU worker (default: the CPUs divided among the workers)")
    p.epilog = (p.epilog or "") + "\n" + ENGINE_EPILOG


def check_engine_options(args: argparse.Namespace) -> None:
    """Options that only the Ray engine takes, and local-only options it does not."""
    if args.engine == "local":
        given = [flag for flag, value, default in (("--address", args.address, ""), ("--workers", args.workers, None),
                                                   ("--num-gpus-per-worker", args.num_gpus_per_worker, None),
                                                   ("--format", args.format, "files"),
                                                   ("--shard-size", args.shard_size, 16),
                                                   ("--threads-per-worker", args.threads_per_worker, None))
                 if value != default]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --engine ray")
        return
    local_only = [flag for flag, given in (("--source", args.source), ("--boxes", args.boxes is not None))
                  if given]
    if local_only:
        raise UsageError(f"{', '.join(local_only)} not supported with --engine ray; use --engine local")


def run_ray(args: argparse.Namespace, tasks: list[str], models: dict, input_size, build_predictor, options,
            settings) -> int:
    """Run the parsed ``predict`` command on Ray; returns the exit status."""
    from sapiens2.serving.bookkeeping import VideoOptions
    from sapiens2.serving.ray_engine import PredictInterrupted, RayOptions, predict_ray

    models = {t: m.resolve() if isinstance(m, Path) else m for t, m in models.items()}  # workers' cwd may differ
    engine = RayOptions(address=args.address, workers=args.workers, num_gpus_per_worker=args.num_gpus_per_worker,
                        shard_size=args.shard_size, format=args.format,
                        threads_per_worker=args.threads_per_worker,
                        progress=sys.stderr.isatty() if args.progress is None else args.progress)
    engine.check()
    factory = functools.partial(build_predictor, args, tasks, models, input_size)  # called once per worker
    try:
        summary = predict_ray(args.inputs, args.output, tasks, factory, options=options, settings=settings,
                              engine=engine, overwrite=args.overwrite, max_pixels=args.max_pixels,
                              every=args.every, video=VideoOptions(
                                  start=args.start, end=args.end, max_frames=args.max_frames, track=args.track,
                                  smoothing=args.smooth, frame_files=args.frame_files, fps=args.fps))
    except (KeyboardInterrupt, PredictInterrupted) as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}): committed shards are kept; run the same command to finish",
              file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    return 0 if summary.done + summary.skipped > 0 else 1
