"""Live mode end to end: one person walking, played like a 30 frames/s camera, pose + seg on every frame the model
can take (the rest dropped), the overlay drawn as for the window; FPS, CPU time per frame and latency.

    .venv/bin/python benchmarks/live.py [--students] [--arch sapiens2_tiny] [--pose-size 128x96] [--seg-size 128x96]
                                        [--size 480x640] [--seconds 6] [--redetect-every 30] [--repeats 2]
                                        [--threads N] [--profile-frames 40]

Renders a one-person synthetic clip (:func:`sapiens2.video.synthetic.crossing_clip` with one path), upscales it
to ``--size`` (a webcam's 640x480 by default) and writes it as an mp4; then runs the real live job
(:class:`sapiens2.serving.live_job.LiveSession` + :func:`run_live`: the latest-frame-wins grabber paced at 30
frames/s, pose boxes from the previous keypoints, the whole frame as the box at each re-detection (``--detector
none``; one person), tracking, smoothing, the JSON Lines file, and the overlay picture of every processed frame made
as for the window, which is not shown) with randomly initialised models: ``--students`` = ``sapiens2_student_pose``
and ``sapiens2_student_seg`` (both at 256x192 unless sizes are given), else ``--arch`` for both.

Two predictors, interleaved repeat by repeat (A B A B ...): *coarse* seg masks (``Predictor(coarse_seg=True)``,
what ``predict --live`` uses: class ids at the seg input's pixel count, enlarged nearest-neighbour) and the
*official* masks (every class upsampled to every frame pixel) as the baseline. Per variant, best of ``--repeats``:
live FPS (wall), the process's CPU time per processed frame (all threads: the grabber's decoding of every frame read,
dropped ones included, the model, tracking, JSON, drawing), latency p50 / p95, frames read / processed / dropped.
Then a sequential pass (no grabber, ``--profile-frames`` frames) splits one thread's CPU time per frame by stage:
decode, pre (seg resize, crop warp), forward (seg + pose), post (seg mask, pose decode), tracking, JSON record,
drawing. On a shared machine wall rates fall with the load; CPU time per frame much less: what one idle core takes
per frame is the CPU figure (1000 / ms = the FPS one core would give, before the two torch threads of the forward).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2


def parse_hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> list:
    from sapiens2.video.synthetic import crossing_clip

    clip = crossing_clip(frames, 192, 256, paths=((-1.2, 1.2, 3.5),))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (size[1], size[0]))
    big = []
    for frame in clip.frames:
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        big.append(frame)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return big


class PictureOnly:
    """A display that shows nothing: run_live still makes the overlay picture of every result, as for a window."""

    def show(self, rgb) -> bool:
        return True

    def close(self) -> None:
        pass


def cpu_stage_clock():
    """StageClock charging each predictor stage its thread's CPU time instead of wall time (profile pass only)."""
    from sapiens2.inference.predictor import StageClock

    class CpuStageClock(StageClock):
        @contextlib.contextmanager
        def stage(self, name: str):
            start = time.thread_time()
            try:
                yield
            finally:
                self.totals[name] += time.thread_time() - start

    return CpuStageClock


def profile_stages(predictor, video: Path, frames: int, redetect_every: int) -> dict[str, float]:
    """Thread CPU milliseconds per frame by stage, the live session's steps run one after another on this thread."""
    import sapiens2.inference.predictor as predictor_module
    from sapiens2.serving.live_job import LiveOptions, LiveSession, _frame_record, live_overlay
    from sapiens2.serving.video_job import json_line
    from sapiens2.video.live import BoxReuseOptions, Grabbed

    session = LiveSession(predictor, video, LiveOptions(pace=False, max_frames=frames,
                                                        boxes=BoxReuseOptions(redetect_every=redetect_every)))
    totals = dict.fromkeys(("decode", "load", "pre", "forward", "post", "tracking", "record", "draw"), 0.0)
    sink = io.StringIO()
    original = predictor_module.StageClock
    predictor_module.StageClock = cpu_stage_clock()
    try:
        source = iter(session.source.frames())
        for n in range(frames):
            t = time.thread_time()
            frame = next(source, None)
            if frame is None:
                break
            totals["decode"] += time.thread_time() - t
            t = time.thread_time()
            result = session._process(Grabbed(frame, time.perf_counter(), n))
            spent = time.thread_time() - t
            for name, seconds in result.prediction.timings.items():
                totals[name] += seconds
            totals["tracking"] += spent - sum(result.prediction.timings.values())  # boxes, tracking, smoothing
            t = time.thread_time()
            sink.write(json_line(_frame_record(result, session)))
            totals["record"] += time.thread_time() - t
            t = time.thread_time()
            live_overlay(result, session.tasks, session.stats)
            totals["draw"] += time.thread_time() - t
    finally:
        predictor_module.StageClock = original
        getattr(session.source, "close", lambda: None)()
    return {name: 1000.0 * seconds / max(1, n + 1) for name, seconds in totals.items()}


def live_run(predictor, video: Path, out: Path, redetect_every: int) -> dict:
    from sapiens2.serving.live_job import LiveOptions, LiveSession, run_live
    from sapiens2.video.live import BoxReuseOptions

    session = LiveSession(predictor, video, LiveOptions(boxes=BoxReuseOptions(redetect_every=redetect_every)))
    cpu = time.process_time()
    summary = run_live(session, out, display=PictureOnly()).summary
    summary["cpu_ms_per_frame"] = 1000.0 * (time.process_time() - cpu) / max(1, summary["frames_processed"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", action="store_true",
                        help="sapiens2_student_pose + sapiens2_student_seg (default sizes 256x192)")
    parser.add_argument("--arch", default="sapiens2_tiny", help="both tasks' arch without --students")
    parser.add_argument("--pose-size", type=parse_hw, default=None, help="pose crop HxW (default 128x96, students "
                                                                         "256x192)")
    parser.add_argument("--seg-size", type=parse_hw, default=None, help="seg input HxW (default 128x96, students "
                                                                        "256x192)")
    parser.add_argument("--size", type=parse_hw, default=(480, 640), help="camera frame HxW")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length at 30 frames/s")
    parser.add_argument("--redetect-every", type=int, default=30)
    parser.add_argument("--detector", default="none", help="person boxes at each re-detection (none: the whole frame, one person)")
    parser.add_argument("--tasks", default="pose,seg")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile-frames", type=int, default=40, help="frames of the per-stage CPU pass (0: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from sapiens2.inference.predictor import Predictor
    from sapiens2.models.task_model import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    default = (256, 192) if args.students else (128, 96)
    sizes = {"pose": args.pose_size or default, "seg": args.seg_size or default}
    archs = {t: f"sapiens2_student_{t}" if args.students else args.arch for t in tasks}
    torch.manual_seed(0)
    models = {t: build_model(t, archs[t], img_size=sizes[t]).eval() for t in tasks}
    variants = {"coarse seg (live)": Predictor(tasks, models, device="cpu", detector=args.detector, coarse_seg=True),
                "official seg": Predictor(tasks, models, device="cpu", detector=args.detector)}
    if "seg" not in tasks:
        variants.pop("official seg")
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "one_person.mp4"
        frames = write_clip(video, int(args.seconds * 30), args.size)
        for predictor in variants.values():
            predictor.predict(frames[0])  # warm-up
        print(f"{archs}, pose {sizes['pose']}, seg {sizes['seg']}, frames {args.size}, torch threads "
              f"{torch.get_num_threads()}, load average before {os.getloadavg()}")
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat in range(args.repeats):  # interleaved: the load changes the same for both
            for name, predictor in variants.items():
                s = live_run(predictor, video, Path(tmp) / f"run{repeat}", args.redetect_every)
                runs[name].append(s)
                print(f"  repeat {repeat} {name:18s}: live {s['fps']:5.2f} FPS (wall), {s['cpu_ms_per_frame']:5.1f} ms "
                      f"CPU per processed frame, latency p50 {s['latency_ms_p50']:.0f} ms p95 "
                      f"{s['latency_ms_p95']:.0f} ms, read {s['frames_read']} processed {s['frames_processed']} "
                      f"dropped {s['frames_dropped']}, detector {s.get('detector_calls')} time(s)", flush=True)
        best = {name: (max(s["fps"] for s in rs), min(s["cpu_ms_per_frame"] for s in rs)) for name, rs in runs.items()}
        for name, (fps, cpu) in best.items():
            print(f"best {name:18s}: live {fps:5.2f} FPS (wall); {cpu:5.1f} ms CPU per frame = {1000 / cpu:5.1f} "
                  f"frames per CPU second")
        if len(best) == 2:
            (_, (fa, ca)), (_, (fb, cb)) = best.items()
            print(f"coarse / official: {fa / fb:.2f}x FPS (wall), {cb / ca:.2f}x less CPU per frame")
        if args.profile_frames:
            print(f"CPU ms per frame by stage (one thread, {args.profile_frames} frames one after another, medians of "
                  f"{args.repeats} passes):")
            for name, predictor in variants.items():
                passes = [profile_stages(predictor, video, args.profile_frames, args.redetect_every)
                          for _ in range(args.repeats)]
                stages = {k: statistics.median(p[k] for p in passes) for k in passes[0]}
                print(f"  {name:18s}: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                      + f"; total {sum(stages.values()):.1f}")
        print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
