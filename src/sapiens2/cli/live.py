"""``sapiens2 predict --live``: the live options of ``predict`` and the run (the job is
:mod:`sapiens2.serving.live_job`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sapiens2.cli.common import error
from sapiens2.errors import UsageError

INTERRUPTED = 130


def add_live_options(p: argparse.ArgumentParser) -> None:
    live = p.add_argument_group("live (one camera, stream or video, at the rate the model keeps up with)")
    live.add_argument("--live", action="store_true",
                      help="process the newest frame each time the model is free, dropping the frames it had no "
                           "time for (never queueing them); pose boxes come from the previous frame's keypoints; "
                           "shows a window when a display exists, reports FPS and latency. One --source or video "
                           "INPUT; files play at their frame rate, like a camera")
    live.add_argument("--redetect-every", type=int, default=None, metavar="N",
                      help="live: run the person detector every N frames at least (default 30; also at the start "
                           "and whenever tracking confidence drops)")
    live.add_argument("--record", default=None, metavar="FILE.mp4",
                      help="live: record the annotated frames (overlay, FPS, latency), in real time")
    live.add_argument("--display", action=argparse.BooleanOptionalAction, default=None,
                      help="live: show a window (q or Esc stops); default: when a display exists")


def check_live_options(args: argparse.Namespace, sources) -> None:
    """Usage errors of the live options (before any model is loaded)."""
    if not args.live:
        given = [name for name, value in (("--redetect-every", args.redetect_every), ("--record", args.record),
                                          ("--display", args.display)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --live")
        return
    if len(sources) + len(args.inputs) != 1:
        raise UsageError(f"--live takes one source (a camera index, stream URL, video file or folder of frames), "
                         f"got {len(sources) + len(args.inputs)}")
    if args.redetect_every is not None and args.redetect_every < 1:
        raise UsageError(f"--redetect-every must be >= 1, got {args.redetect_every}")
    if args.every != 1:
        raise UsageError("--every does not apply with --live (frames are dropped to keep up instead)")
    if args.record is not None and Path(args.record).suffix.lower() not in (".mp4", ".avi", ".mov", ".mkv"):
        raise UsageError(f"--record {args.record!r}: give a video file name (.mp4)")


def run_live_command(args: argparse.Namespace, tasks, models: dict, input_size, sources, build_predictor) -> int:
    from sapiens2.errors import InputSizeError, Sapiens2Error
    from sapiens2.serving.live_job import LiveOptions, LiveSession, run_live
    from sapiens2.video.live import BoxReuseOptions
    from sapiens2.video.sources import open_source, parse_position, parse_source

    spec = sources[0] if sources else None
    if spec is None:
        try:
            spec = parse_source(args.inputs[0])
        except ValueError as exc:
            raise UsageError(f"{args.inputs[0]!r}: {exc}") from None
    try:
        predictor = build_predictor(args, tasks, models, input_size)
    except (UsageError, InputSizeError) as exc:
        raise UsageError(str(exc)) from exc
    except Sapiens2Error as exc:
        error("predict", str(exc))
        return 1
    boxes = BoxReuseOptions() if args.redetect_every is None else BoxReuseOptions(redetect_every=args.redetect_every)
    try:
        source = open_source(spec, fps=args.fps, max_pixels=predictor.max_pixels)
    except Sapiens2Error as exc:  # the source cannot be opened
        error("predict", str(exc))
        return 1
    start, end = parse_position(args.start, source.fps) or 0, parse_position(args.end, source.fps)
    if end is not None and end <= start:
        getattr(source, "close", lambda: None)()
        raise UsageError(f"--end {args.end} is not after --start {args.start or 0}")
    session = LiveSession(predictor, source, LiveOptions(boxes=boxes, max_frames=args.max_frames, start=start,
                                                         end=end, track=args.track, smoothing=args.smooth),
                          tasks=tasks)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    base = Path(args.output) / spec.stem
    try:
        report = run_live(session, base, record=Path(args.record) if args.record else None, display=args.display,
                          progress=progress, model_name=predictor_model_name(models, tasks))
    except Sapiens2Error as exc:
        error("predict", str(exc))
        return 1
    for line in report.lines():
        print(line)
    return INTERRUPTED if report.summary["stopped_by"] == "interrupted" else 0


def predictor_model_name(models: dict, tasks) -> str | None:
    """The pose model's name for the JSON Lines header (the file name or the published name)."""
    from sapiens2.cli.predict import _model_name

    task = "pose" if "pose" in tasks else tasks[0]
    return _model_name(models[task], task) if task in models else None
