"""The predict job's video pipeline: frames decoded ahead on a reader thread, people tracked and keypoints, depth
and the pointmap scale smoothed, annotated videos encoded on one extra thread in frame order, per-frame files on
the job's writer pool; the JSON Lines file, the videos and the summary are published together (all or none)."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io import VideoReadError, VideoWriter, atomic_open, write_json
from sapiens2.tasks.results import Prediction

from .bookkeeping import JobSummary, RunningJob, SourceItem, VideoReport, predict_input
from .completion import write_record
from .outputs import SUMMARY_SUFFIX, frame_base, render_task, video_jsonl_suffix, with_suffix, write_prediction
from .pose_json import frame_pose_record, pose_header

logger = logging.getLogger("sapiens2.serving.runner")  # the job's log, wherever its parts live


def open_video_source(predict_job: RunningJob, item):
    from sapiens2.video.sources import SourceSpec, open_source

    spec = item.spec if isinstance(item, SourceItem) else SourceSpec("file", Path(item.path))
    return open_source(spec, fps=predict_job.video.fps, open_capture=predict_job.open_capture,
                       max_pixels=predict_job.max_pixels)



def frame_range(predict_job: RunningJob, fps: float) -> tuple[int, int | None]:
    from sapiens2.video.sources import parse_position

    def index(value) -> int | None:
        return value if value is None or isinstance(value, int) else parse_position(str(value), fps)

    start, end = index(predict_job.video.start), index(predict_job.video.end)
    start = start or 0
    if end is not None and end <= start:
        raise ValueError(f"the end ({predict_job.video.end}) is not after the start ({predict_job.video.start or 0})")
    return start, end



def run_video(predict_job: RunningJob, item, base: Path, summary: JobSummary, writer: ThreadPoolExecutor, bar) -> None:
    from sapiens2.video.prefetch import Prefetcher
    from sapiens2.video.temporal import TemporalProcessor

    began = time.perf_counter()
    try:
        source = open_video_source(predict_job, item)
        start, end = frame_range(predict_job, source.fps)
        temporal = TemporalProcessor(track=predict_job.video.track, smoothing=predict_job.video.smoothing)
    except Exception as exc:  # whatever opening this video raises fails it alone
        predict_job.record_failure(summary, item.path, exc)
        bar.update(1)
        return
    report = VideoReport(source=str(item.path))
    fps = source.fps / predict_job.every
    inflight: deque = deque()
    frame_writes: deque[Future] = deque()
    files = 0
    frames_iter = source.frames(step=predict_job.every, start=start, end=end, max_frames=predict_job.video.max_frames)
    reader = Prefetcher(frames_iter, depth=predict_job.video.prefetch)

    def feed() -> Iterator[Any]:
        for frame in reader:
            inflight.append(frame)
            yield predict_input(frame.rgb, frame_index=frame.index)

    def drain(limit: int) -> int:
        written = 0
        while len(frame_writes) > limit or (frame_writes and frame_writes[0].done()):
            written += len(frame_writes.popleft().result())  # a failed write fails the whole video
        return written

    jsonl_suffix = video_jsonl_suffix(predict_job.tasks)
    try:
        with ExitStack() as stack:
            # callbacks run last-in first-out: stop the reader thread before the capture it reads is released
            stack.callback(getattr(source, "close", lambda: None))
            stack.callback(reader.close)
            videos = {task: stack.enter_context(VideoWriter(with_suffix(base, f".{task}.mp4"), fps))
                      for task in predict_job.tasks}
            lines = None
            if jsonl_suffix is not None:
                lines = stack.enter_context(atomic_open(with_suffix(base, jsonl_suffix), "w"))
                header = pose_header(model=predict_job.options.model_names.get("pose"), fps=fps, kind="video",
                                     image_size=(source.height, source.width),
                                     settings=predict_job.options.pose_settings)
                if "pose" not in predict_job.tasks:
                    header = {"format": "sapiens2.frames.video", "format_version": header["format_version"],
                              "fps": fps, "image_size": header["image_size"]}
                preset = temporal.preset
                header.update(source_fps=source.fps, every=predict_job.every, start_frame=start, end_frame=end,
                              tracking=temporal.track,
                              smoothing=preset.describe() if preset is not None else None)
                lines.write(json_line(header))
            # Annotated videos are rendered and encoded on one extra thread, in frame order. Entered last
            # so that on an error it finishes before the writers it feeds are discarded.
            sink = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="s2-video"))
            sink_jobs: deque[Future] = deque()
            try:
                for prediction in predict_job.predictor.predict_many(feed()):
                    frame = inflight.popleft()
                    if getattr(prediction, "error", None) is not None:
                        raise prediction.error  # a frame the model failed on fails the video, as a crash does
                    prediction.frame_index = frame.index
                    tracks = temporal(prediction, frame.time_s)
                    written = _at_smoothed_scale(prediction, tracks)
                    predict_job.count_prediction(summary, prediction, video=item.path)
                    report.frames += 1
                    if predict_job.video.frame_files:
                        frame_writes.append(writer.submit(write_prediction, written, frame.rgb,
                                                          frame_base(base, frame.index), predict_job.tasks,
                                                          predict_job.options, video_frame=True))
                    sink_jobs.append(sink.submit(_video_frame, predict_job, written, frame, tracks, videos, lines,
                                                 fps))
                    while len(sink_jobs) > predict_job.max_pending or (sink_jobs and sink_jobs[0].done()):
                        sink_jobs.popleft().result()
                    files += drain(predict_job.max_pending)
                    bar.update(1)
            except KeyboardInterrupt:  # stop here, publish what was processed
                report.interrupted = summary.interrupted = True
                logger.warning("%s: interrupted after %d frame(s); writing what was processed", item.path,
                               report.frames)
            for job in sink_jobs:
                job.result()
            files += drain(0)
            if report.frames == 0:
                reason = "no frame could be decoded" if not source.issues else source.issues[-1]
                raise VideoReadError(item.path, reason if not report.interrupted else "interrupted before "
                                     "the first frame")
            # leaving the stack publishes the JSON Lines and the videos (all or none on error)
        report.people = temporal.people_frames
        report.tracks = temporal.total_tracks
        report.issues = list(source.issues)
        report.wait_s = reader.wait_s
        report.wall_s = time.perf_counter() - began
        write_json(with_suffix(base, SUMMARY_SUFFIX), _video_summary(predict_job, report, source, fps, start, end,
                                                                          temporal))
        if not report.interrupted:  # a partial video has no record, so the next run redoes it
            write_record(base, item.path, predict_job.expected_outputs(item, base), predict_job.item_settings(item))
        summary.videos.append(report)
        summary.frames += report.frames
        summary.files_written += files + len(videos) + (lines is not None) + 1
        summary.done += 1
        logger.info("%s: %d frame(s), %d people-frame(s), %d track(s)", item.path, report.frames,
                    report.people, report.tracks)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        for future in frame_writes:
            future.cancel()
        predict_job.record_failure(summary, item.path, exc)



def _video_summary(predict_job: RunningJob, report: VideoReport, source, fps: float, start: int, end: int | None,
                   temporal) -> dict[str, Any]:
    preset = temporal.preset
    return {
        "format": "sapiens2.video.summary", "source": report.source, "tasks": list(predict_job.tasks),
        "source_fps": source.fps, "output_fps": fps, "every": predict_job.every, "start_frame": start,
        "end_frame": end, "image_size": {"height": source.height, "width": source.width},
        "frames": report.frames, "people": report.people, "tracks": report.tracks,
        "tracking": temporal.track, "smoothing": preset.describe() if preset is not None else None,
        "wall_s": round(report.wall_s, 3), "frames_per_second": round(report.frames_per_second, 3),
        "model_wait_s": round(report.wait_s, 3), "model_idle_share": round(report.idle_share, 4),
        "issues": report.issues, "interrupted": report.interrupted,
    }



def _video_frame(predict_job: RunningJob, prediction: Prediction, frame, tracks, videos: dict[str, VideoWriter], lines,
                 fps: float) -> None:
    for task, video in videos.items():
        if task == "pose":
            image = render_task(prediction, frame.rgb, task, track_ids=tracks.track_ids,
                                keypoints=tracks.keypoints)
        else:
            image = render_task(prediction, frame.rgb, task)
        video.write(image)
    if lines is not None:
        lines.write(json_line(frame_pose_record(prediction.pose, frame_index=frame.index, fps=fps * predict_job.every,
                                                 time_s=frame.time_s, tracks=tracks)))




def _at_smoothed_scale(prediction: Prediction, tracks) -> Prediction:
    """The prediction with its pointmap at the smoothed scale (the same object when there is nothing to do)."""
    factor = tracks.pointmap_factor
    if prediction.pointmap is None or factor == 1.0:
        return prediction
    pointmap = dataclasses.replace(prediction.pointmap, pointmap=prediction.pointmap.pointmap * np.float32(factor),
                                   scale=float(tracks.scale))
    return dataclasses.replace(prediction, pointmap=pointmap)


def json_line(obj: dict) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


__all__ = ["frame_range", "open_video_source", "run_video"]
