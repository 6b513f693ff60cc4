"""Live mode end to end: one person walking, played like a 30 frames/s camera, pose + seg on every frame the model
can take (the rest dropped), FPS and capture-to-result latency.

    .venv/bin/python benchmarks/live.py [--arch sapiens2_tiny] [--pose-size 128x96] [--seg-size 128x96]
                                        [--size 480x640] [--seconds 6] [--redetect-every 30] [--repeats 2]

Renders a one-person synthetic clip (:func:`sapiens2.video.synthetic.crossing_clip` with one path), upscales it
to ``--size`` (a webcam's 640x480 by default) and writes it as an mp4; then runs the real live job
(:class:`sapiens2.serving.live_job.LiveSession` + :func:`run_live`: the latest-frame-wins grabber paced at 30
frames/s, pose boxes from the previous keypoints, the whole frame as the box at each re-detection (``--detector none``; one person), tracking,
smoothing, the JSON Lines file) with randomly initialised ``--arch`` models at the given input sizes. Baseline in
the same run: the same predictor on the same frames one after another, no grabber (the model's own rate).
Prints, best of ``--repeats``: live FPS, latency p50 / p95, frames read / processed / dropped, detector calls,
and the load average.
"""
from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sapiens2_tiny")
    parser.add_argument("--pose-size", type=parse_hw, default=(128, 96), help="pose crop HxW")
    parser.add_argument("--seg-size", type=parse_hw, default=(128, 96), help="seg input HxW")
    parser.add_argument("--size", type=parse_hw, default=(480, 640), help="camera frame HxW")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length at 30 frames/s")
    parser.add_argument("--redetect-every", type=int, default=30)
    parser.add_argument("--detector", default="none", help="person boxes at each re-detection (none: the whole frame, one person)")
    parser.add_argument("--tasks", default="pose,seg")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-frames", type=int, default=30, help="frames of the model-alone baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from sapiens2.inference.predictor import PredictInput, Predictor
    from sapiens2.models.task_model import build_model
    from sapiens2.serving.live_job import LiveOptions, LiveSession, run_live
    from sapiens2.video.live import BoxReuseOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    sizes = {"pose": args.pose_size, "seg": args.seg_size}
    torch.manual_seed(0)
    models = {t: build_model(t, args.arch, img_size=sizes[t]).eval() for t in tasks}
    predictor = Predictor(tasks, models, device="cpu", detector=args.detector)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "one_person.mp4"
        frames = write_clip(video, int(args.seconds * 30), args.size)
        predictor.predict(frames[0])  # warm-up
        print(f"{args.arch}, tasks {tasks}, pose {sizes['pose']}, seg {sizes['seg']}, frames {args.size}, "
              f"torch threads {torch.get_num_threads()}, load average before {os.getloadavg()}")
        best_base = best_live = None
        for repeat in range(args.repeats):
            start = time.perf_counter()
            count = min(len(frames), args.baseline_frames)
            for i in range(count):  # the model's own rate: every frame, one after another, detector each time
                predictor.predict(PredictInput(frames[i], frame_index=i))
            base = count / (time.perf_counter() - start)
            best_base = base if best_base is None else max(best_base, base)
            session = LiveSession(predictor, video, LiveOptions(boxes=BoxReuseOptions(
                redetect_every=args.redetect_every)))
            summary = run_live(session, Path(tmp) / f"run{repeat}", display=False).summary
            print(f"  repeat {repeat}: model alone {base:.2f} frames/s (detector every frame); live {summary['fps']:.2f} "
                  f"FPS, latency p50 {summary['latency_ms_p50']:.0f} ms p95 {summary['latency_ms_p95']:.0f} ms (model "
                  f"{summary['model_ms_mean']:.0f} ms/frame), "
                  f"read {summary['frames_read']} processed {summary['frames_processed']} dropped "
                  f"{summary['frames_dropped']}, detector {summary.get('detector_calls')} time(s) "
                  f"{summary.get('detections')}")
            if best_live is None or summary["fps"] > best_live["fps"]:
                best_live = summary
        print(f"best: model alone {best_base:.2f} frames/s; live {best_live['fps']:.2f} FPS, latency p50 "
              f"{best_live['latency_ms_p50']:.0f} ms, p95 {best_live['latency_ms_p95']:.0f} ms; load average after "
              f"{os.getloadavg()}")


if __name__ == "__main__":
    main()
