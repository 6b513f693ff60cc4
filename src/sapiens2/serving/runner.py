"""The batch job behind ``sapiens2 predict``: images and videos in, files out, robust to bad inputs.

- Resume: an input is skipped unless ``overwrite`` when its completion record (``B.done.json``, written last, see
  :mod:`~sapiens2.serving.completion`) says its outputs are whole and were made with the same settings from the
  same input; an interrupted video, other options or a changed input redo it.
- Bad inputs (unreadable, truncated, not an image, empty video) and per-input failures at any stage (reading, its
  boxes file, the model, writing) are recorded with the reason and fail that input only; the job goes on.
- Overlap: images are read by a small thread pool ahead of the model, and files are written by another while
  the model runs on the next batch (OpenCV and NumPy release the GIL for decoding, encoding and file I/O).
  Memory stays bounded: at most a few batches are in flight. Video frames are streamed, never all held.
- Videos (files, image-sequence folders, cameras, stream URLs: :mod:`sapiens2.video.sources`) are decoded on a
  reader thread ahead of the model (:class:`~sapiens2.video.prefetch.Prefetcher`); people are tracked and their
  keypoints, depth and the pointmap scale smoothed (:class:`~sapiens2.video.temporal.TemporalProcessor`). Frames
  that do not decode and streams that end early are reported as issues and the rest is processed. Ctrl-C during
  a video (the way to stop a camera) publishes what was processed so far and stops the job.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sapiens2.io import DEFAULT_MAX_PIXELS, InputItem, VideoReadError, VideoWriter, atomic_open, load_image, write_json
from sapiens2.tasks.results import Prediction

from .completion import clear_record, is_complete, write_record
from .naming import output_bases
from .outputs import (SUMMARY_SUFFIX, OutputOptions, frame_base, image_outputs, order_tasks, render_task,
                      video_jsonl_suffix, video_outputs, with_suffix, write_prediction)
from .pose_json import frame_pose_record, pose_header

logger = logging.getLogger(__name__)


class PredictorLike(Protocol):
    def predict(self, image: Any) -> Prediction: ...
    def predict_many(self, images: Iterable[Any]) -> Iterator[Prediction]: ...


@dataclass
class InputFailure:
    path: Path
    reason: str


@dataclass(frozen=True)
class SourceItem:
    """A video input that is not a plain file found by discovery: a camera, a stream URL or an image-sequence
    folder (``--source``). Quacks like :class:`~sapiens2.io.InputItem` (``path``, ``relative``, ``is_video``)."""

    spec: Any  # sapiens2.video.sources.SourceSpec

    kind = "video"
    is_video = True

    @property
    def path(self) -> Path:
        return Path(self.spec.display)

    @property
    def relative(self) -> Path:
        return Path(self.spec.stem)

    @property
    def live(self) -> bool:
        return bool(self.spec.live)


@dataclass(frozen=True)
class VideoOptions:
    """How videos are read and post-processed.

    ``start`` / ``end``: first frame and the frame to stop before, as a source frame index (int) or a text for
    :func:`~sapiens2.video.sources.parse_position` (``"12.5"`` s, ``"1:30"``, ``"300f"``). ``max_frames``: stop
    after this many processed frames (cameras and streams never end on their own). ``track``: track ids for the
    people. ``smoothing``: ``"none"``, ``"light"`` or ``"strong"``. ``prefetch``: frames decoded ahead on a thread
    (0: decode in the model's thread). ``frame_files``: write the per-frame data files. ``fps``: frame rate of
    image-sequence folders (and an override for sources that report none).
    """

    start: int | str | None = None
    end: int | str | None = None
    max_frames: int | None = None
    track: bool = True
    smoothing: str = "light"
    prefetch: int = 8
    frame_files: bool = True
    fps: float | None = None


@dataclass
class VideoReport:
    """What happened to one video (also written to its ``.summary.json``)."""

    source: str
    frames: int = 0
    people: int = 0  # person detections summed over frames
    tracks: int = 0
    wall_s: float = 0.0
    wait_s: float = 0.0  # time the model waited for decoded frames
    issues: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def idle_share(self) -> float:
        return self.wait_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class JobSummary:
    """What a job did. ``images``/``frames`` count predictions made; ``stage_s`` sums ``Prediction.timings``."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[InputFailure] = field(default_factory=list)
    images: int = 0
    frames: int = 0
    people: int = 0  # people the pose boxes came for (detector, boxes file, seg); whole-image fallbacks not included
    whole_image_fallbacks: int = 0  # images/frames where no person was found and pose used the whole image
    files_written: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    videos: list[VideoReport] = field(default_factory=list)
    interrupted: bool = False

    @property
    def predictions(self) -> int:
        return self.images + self.frames

    @property
    def per_second(self) -> float:
        return self.predictions / self.wall_s if self.wall_s > 0 else 0.0

    def add_timings(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + float(seconds)

    def lines(self) -> list[str]:
        """A human summary, failures listed with their reasons."""
        fallbacks = (f"; no person found, whole image used: {self.whole_image_fallbacks}"
                     if self.whole_image_fallbacks else "")
        out = [f"inputs: {self.total} ({self.done} done, {self.skipped} skipped, {len(self.failed)} failed)",
               f"predicted: {self.images} image(s), {self.frames} video frame(s); people found: {self.people}"
               + fallbacks,
               f"time: {self.wall_s:.1f} s, {self.per_second:.2f} images/s; files written: {self.files_written}"]
        for video in self.videos:
            out.append(f"video {video.source}: {video.frames} frame(s), {video.tracks} track(s), "
                       f"{video.frames_per_second:.2f} frames/s, model waiting for frames "
                       f"{100 * video.idle_share:.1f}% of the time" + (" (interrupted)" if video.interrupted else ""))
            out += [f"  issue: {issue}" for issue in video.issues]
        if self.interrupted:
            out.append("interrupted: the inputs after the current one were not processed")
        if self.failed:
            out.append("failed inputs:")
            out += [f"  {f.path}: {f.reason}" for f in self.failed]
        return out


def _reason(exc: BaseException) -> str:
    """A one-line reason; our own errors already name the file, so keep only their reason."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        return reason
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress_bar(enabled: bool, total: int | None):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1)


class PredictJob:
    """Run a predictor over discovered inputs and write every task's files under ``output_dir``.

    ``predictor``: anything with ``predict(x)`` and ``predict_many(xs)`` returning
    :class:`~sapiens2.tasks.results.Prediction` in input order, fed
    :class:`~sapiens2.tasks.predictor.PredictInput` objects (``sapiens2.tasks.predictor.Predictor``).
    ``boxes_for(item)``: person boxes for an image input from a boxes file, or None (then the predictor's own
    detector is used); such predictions are labelled ``box_source="file"``.
    ``settings``: what else decides the outputs (model identities, input size, flip test, detector, ...); it goes
    into each input's completion record with the job's own options, and a re-run with other settings redoes inputs.
    """

    def __init__(self, predictor: PredictorLike, tasks: Sequence[str], output_dir: str | Path,
                 options: OutputOptions | None = None, *, overwrite: bool = False, every: int = 1,
                 progress: bool = False, read_workers: int = 2, write_workers: int = 2, max_pending: int = 8,
                 boxes_for: Callable[[InputItem], Any] | None = None, video: VideoOptions | None = None,
                 open_capture: Callable[[Any], Any] | None = None, settings: Mapping[str, Any] | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.predictor = predictor
        self.tasks = order_tasks(tasks)
        self.output_dir = Path(output_dir)
        self.options = options or OutputOptions()
        self.overwrite = overwrite
        self.every = every
        self.progress = progress
        self.read_workers = max(1, read_workers)
        self.write_workers = max(1, write_workers)
        self.max_pending = max(1, max_pending)
        self.boxes_for = boxes_for
        self.video = video or VideoOptions()
        self.open_capture = open_capture  # replaces cv2.VideoCapture for cameras/streams/files (tests: fakes)
        self.settings = dict(settings or {})

    # ------------------------------------------------------------------ planning
    def item_settings(self, item) -> dict[str, Any]:
        """Everything that decides an input's outputs, as its completion record keeps it."""
        settings = {**self.settings, "tasks": list(self.tasks), "seg_probabilities": self.options.seg_probabilities,
                    "ply_max_points": self.options.ply_max_points}
        if item.is_video:  # frame selection and post-processing only change videos
            v = self.video
            settings.update(every=self.every, start=v.start, end=v.end, max_frames=v.max_frames, track=v.track,
                            smoothing=v.smoothing, frame_files=v.frame_files, fps=v.fps)
        return settings

    def expected_outputs(self, item, base: Path) -> list[Path]:
        return video_outputs(base, self.tasks) if item.is_video else image_outputs(base, self.tasks, self.options)

    def plan(self, items: Sequence[InputItem]) -> list[tuple[InputItem, Path, bool]]:
        """(item, output base, already done) for every input."""
        plan = []
        for item, base in zip(items, output_bases(items, self.output_dir)):
            live = isinstance(item, SourceItem) and item.live  # a camera is never "already done"
            done = not (self.overwrite or live) and is_complete(base, item.path, self.expected_outputs(item, base),
                                                                self.item_settings(item))
            plan.append((item, base, done))
        return plan

    def _estimated_work(self, plan) -> int:
        total = 0
        for item, _, done in plan:
            if done:
                continue
            if not item.is_video:
                total += 1
                continue
            if isinstance(item, SourceItem) and item.live:
                return None  # unknown: a camera has no end
            try:
                count = self._open_source(item).frame_count
                total += math.ceil(max(count, 1) / self.every)
            except Exception:  # only an estimate; the run reports the failure
                total += 1  # it will fail and be counted as one unit
        if self.video.max_frames is not None:
            total = min(total, self.video.max_frames * sum(1 for it, _, d in plan if it.is_video and not d)
                        + sum(1 for it, _, d in plan if not it.is_video and not d))
        return total

    # ------------------------------------------------------------------ running
    def run(self, items: Sequence[InputItem], failures: Iterable[InputFailure] = ()) -> JobSummary:
        """Process ``items``; ``failures`` (e.g. missing paths found during discovery) are added to the summary."""
        start = time.perf_counter()
        summary = JobSummary()
        summary.failed.extend(failures)
        described = getattr(self.predictor, "pose_settings", None)
        if "pose" in self.tasks and isinstance(described, Mapping) and not self.options.pose_settings:
            # the pose files say how they were made: crop size, flip test, detector
            self.options = dataclasses.replace(self.options, pose_settings=dict(described))
        plan = self.plan(items)
        summary.total = len(plan) + len(summary.failed)
        todo = [(item, base) for item, base, done in plan if not done]
        summary.skipped = len(plan) - len(todo)
        if summary.skipped:
            logger.info("skipping %d input(s) whose outputs exist (use --overwrite to redo them)", summary.skipped)
        for _, base in todo:  # outputs about to be replaced must not pass for complete if this run stops midway
            clear_record(base)
        bar = _progress_bar(self.progress, self._estimated_work(plan) if self.progress else None)
        try:
            with ThreadPoolExecutor(self.write_workers, thread_name_prefix="s2-write") as writer:
                images = [(item, base) for item, base in todo if not item.is_video]
                if images:
                    self._run_images(images, summary, writer, bar)
                for item, base in todo:
                    if item.is_video:
                        self._run_video(item, base, summary, writer, bar)
                        if summary.interrupted:
                            break
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("interrupted")
        finally:
            bar.close()
            summary.wall_s = time.perf_counter() - start
        return summary

    def _fail(self, summary: JobSummary, path: Path, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else _reason(exc)
        logger.warning("skipped %s: %s", path, reason)
        summary.failed.append(InputFailure(Path(path), reason))

    def _count(self, summary: JobSummary, prediction: Prediction, video: Path | None = None) -> None:
        summary.add_timings(prediction.timings)
        pose = prediction.pose
        if pose is None:
            return
        if not pose.whole_image_fallback:
            summary.people += pose.num_people
            return
        summary.whole_image_fallbacks += 1
        if summary.whole_image_fallbacks == 1:  # once per run: the summary counts the rest
            where = prediction.source or "an input"
            if video is not None:
                where = f"frame {prediction.frame_index} of {video}"
            logger.warning("no person found in %s: pose used the whole image as one box (more such cases are "
                           "counted in the summary)", where)

    # ------------------------------------------------------------------ images
    def _prefetch(self, jobs, summary: JobSummary, bar) -> Iterator[tuple[InputItem, Path, Any]]:
        """Yield (item, base, loaded image) in order, reading a few images ahead on worker threads."""
        lookahead = self.max_pending + self.read_workers
        with ThreadPoolExecutor(self.read_workers, thread_name_prefix="s2-read") as reader:
            window: deque[tuple[InputItem, Path, Future]] = deque()
            pending = iter(jobs)

            def top_up() -> None:
                while len(window) < lookahead:
                    job = next(pending, None)
                    if job is None:
                        return
                    window.append((job[0], job[1], reader.submit(load_image, job[0].path,
                                                                 max_pixels=self._max_pixels)))

            top_up()
            while window:
                item, base, future = window.popleft()
                top_up()
                try:
                    loaded = future.result()
                except Exception as exc:  # ImageReadError and anything else a broken file triggers
                    self._fail(summary, item.path, exc)
                    bar.update(1)
                    continue
                yield item, base, loaded

    def _run_images(self, jobs, summary: JobSummary, writer: ThreadPoolExecutor, bar) -> None:
        inflight: deque[tuple[InputItem, Path, Any]] = deque()
        writes: deque[tuple[InputItem, Future]] = deque()
        loaded_stream = self._prefetch(jobs, summary, bar)

        def request(job):
            item, _, loaded = job
            boxes = self.boxes_for(item) if self.boxes_for is not None else None
            return predict_input(loaded, source=item.path, boxes=boxes)

        def feed() -> Iterator[Any]:
            # Nothing may raise out of this generator: an exception would end it and drop every later input.
            for job in loaded_stream:
                try:
                    next_request = request(job)
                except Exception as exc:  # e.g. a broken boxes file: this input only
                    self._fail(summary, job[0].path, exc)
                    bar.update(1)
                    continue
                inflight.append(job)
                yield next_request

        def finish(item: InputItem, future: Future) -> None:
            try:
                summary.files_written += len(future.result())
                summary.done += 1
            except Exception as exc:  # a failed write fails this input only
                self._fail(summary, item.path, exc)

        def accept(job, prediction: Prediction) -> None:
            item, base, loaded = job
            if getattr(prediction, "error", None) is not None:  # the predictor isolated this input's failure
                self._fail(summary, item.path, prediction.error)
                bar.update(1)
                return
            if prediction.pose is not None and prediction.pose.box_source == "given":
                prediction.pose.box_source = "file"  # the only boxes this job gives are from --boxes files
            self._count(summary, prediction)
            summary.images += 1
            writes.append((item, writer.submit(self._write_image, prediction, loaded.rgb, item, base)))
            while len(writes) > self.max_pending or (writes and writes[0][1].done()):
                finish(*writes.popleft())
            bar.update(1)

        source = feed()
        while True:
            try:
                for prediction in self.predictor.predict_many(source):
                    accept(inflight.popleft(), prediction)
                break
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                # A batch failed: retry its images one by one so only the culprit is reported, then go on.
                logger.debug("batch failed (%s); retrying %d image(s) one at a time", exc, len(inflight))
                stuck = list(inflight)
                inflight.clear()
                for job in stuck:
                    try:
                        prediction = self.predictor.predict(request(job))
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as single:
                        self._fail(summary, job[0].path, single)
                        bar.update(1)
                        continue
                    accept(job, prediction)
        while writes:
            finish(*writes.popleft())

    def _write_image(self, prediction: Prediction, rgb, item, base: Path) -> list[Path]:
        written = write_prediction(prediction, rgb, base, self.tasks, self.options)
        write_record(base, item.path, written, self.item_settings(item))  # last: marks the input done
        return written

    # ------------------------------------------------------------------ videos
    def _open_source(self, item):
        from sapiens2.video.sources import SourceSpec, open_source

        spec = item.spec if isinstance(item, SourceItem) else SourceSpec("file", Path(item.path))
        return open_source(spec, fps=self.video.fps, open_capture=self.open_capture, max_pixels=self._max_pixels)

    @property
    def _max_pixels(self) -> int | None:
        """The predictor's pixel limit applies to the files read for it (refused from their header)."""
        return getattr(self.predictor, "max_pixels", DEFAULT_MAX_PIXELS)

    def _frame_range(self, fps: float) -> tuple[int, int | None]:
        from sapiens2.video.sources import parse_position

        def index(value) -> int | None:
            return value if value is None or isinstance(value, int) else parse_position(str(value), fps)

        start, end = index(self.video.start), index(self.video.end)
        start = start or 0
        if end is not None and end <= start:
            raise ValueError(f"the end ({self.video.end}) is not after the start ({self.video.start or 0})")
        return start, end

    def _run_video(self, item, base: Path, summary: JobSummary, writer: ThreadPoolExecutor, bar) -> None:
        from sapiens2.video.prefetch import Prefetcher
        from sapiens2.video.temporal import TemporalProcessor

        began = time.perf_counter()
        try:
            source = self._open_source(item)
            start, end = self._frame_range(source.fps)
            temporal = TemporalProcessor(track=self.video.track, smoothing=self.video.smoothing)
        except Exception as exc:  # whatever opening this video raises fails it alone
            self._fail(summary, item.path, exc)
            bar.update(1)
            return
        report = VideoReport(source=str(item.path))
        fps = source.fps / self.every
        inflight: deque = deque()
        frame_writes: deque[Future] = deque()
        files = 0
        frames_iter = source.frames(step=self.every, start=start, end=end, max_frames=self.video.max_frames)
        reader = Prefetcher(frames_iter, depth=self.video.prefetch)

        def feed() -> Iterator[Any]:
            for frame in reader:
                inflight.append(frame)
                yield predict_input(frame.rgb, frame_index=frame.index)

        def drain(limit: int) -> int:
            written = 0
            while len(frame_writes) > limit or (frame_writes and frame_writes[0].done()):
                written += len(frame_writes.popleft().result())  # a failed write fails the whole video
            return written

        jsonl_suffix = video_jsonl_suffix(self.tasks)
        try:
            with ExitStack() as stack:
                # callbacks run last-in first-out: stop the reader thread before the capture it reads is released
                stack.callback(getattr(source, "close", lambda: None))
                stack.callback(reader.close)
                videos = {task: stack.enter_context(VideoWriter(with_suffix(base, f".{task}.mp4"), fps))
                          for task in self.tasks}
                lines = None
                if jsonl_suffix is not None:
                    lines = stack.enter_context(atomic_open(with_suffix(base, jsonl_suffix), "w"))
                    header = pose_header(model=self.options.model_names.get("pose"), fps=fps, kind="video",
                                         image_size=(source.height, source.width),
                                         settings=self.options.pose_settings)
                    if "pose" not in self.tasks:
                        header = {"format": "sapiens2.frames.video", "format_version": header["format_version"],
                                  "fps": fps, "image_size": header["image_size"]}
                    preset = temporal.preset
                    header.update(source_fps=source.fps, every=self.every, start_frame=start, end_frame=end,
                                  tracking=temporal.track,
                                  smoothing=preset.describe() if preset is not None else None)
                    lines.write(_json_line(header))
                # Annotated videos are rendered and encoded on one extra thread, in frame order. Entered last
                # so that on an error it finishes before the writers it feeds are discarded.
                sink = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="s2-video"))
                sink_jobs: deque[Future] = deque()
                try:
                    for prediction in self.predictor.predict_many(feed()):
                        frame = inflight.popleft()
                        if getattr(prediction, "error", None) is not None:
                            raise prediction.error  # a frame the model failed on fails the video, as a crash does
                        prediction.frame_index = frame.index
                        tracks = temporal(prediction, frame.time_s)
                        written = _at_smoothed_scale(prediction, tracks)
                        self._count(summary, prediction, video=item.path)
                        report.frames += 1
                        if self.video.frame_files:
                            frame_writes.append(writer.submit(write_prediction, written, frame.rgb,
                                                              frame_base(base, frame.index), self.tasks,
                                                              self.options, video_frame=True))
                        sink_jobs.append(sink.submit(self._video_frame, written, frame, tracks, videos, lines,
                                                     fps))
                        while len(sink_jobs) > self.max_pending or (sink_jobs and sink_jobs[0].done()):
                            sink_jobs.popleft().result()
                        files += drain(self.max_pending)
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
            write_json(with_suffix(base, SUMMARY_SUFFIX), self._video_summary(report, source, fps, start, end,
                                                                              temporal))
            if not report.interrupted:  # a partial video has no record, so the next run redoes it
                write_record(base, item.path, self.expected_outputs(item, base), self.item_settings(item))
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
            self._fail(summary, item.path, exc)

    def _video_summary(self, report: VideoReport, source, fps: float, start: int, end: int | None,
                       temporal) -> dict[str, Any]:
        preset = temporal.preset
        return {
            "format": "sapiens2.video.summary", "source": report.source, "tasks": list(self.tasks),
            "source_fps": source.fps, "output_fps": fps, "every": self.every, "start_frame": start,
            "end_frame": end, "image_size": {"height": source.height, "width": source.width},
            "frames": report.frames, "people": report.people, "tracks": report.tracks,
            "tracking": temporal.track, "smoothing": preset.describe() if preset is not None else None,
            "wall_s": round(report.wall_s, 3), "frames_per_second": round(report.frames_per_second, 3),
            "model_wait_s": round(report.wait_s, 3), "model_idle_share": round(report.idle_share, 4),
            "issues": report.issues, "interrupted": report.interrupted,
        }

    def _video_frame(self, prediction: Prediction, frame, tracks, videos: dict[str, VideoWriter], lines,
                     fps: float) -> None:
        for task, video in videos.items():
            if task == "pose":
                image = render_task(prediction, frame.rgb, task, track_ids=tracks.track_ids,
                                    keypoints=tracks.keypoints)
            else:
                image = render_task(prediction, frame.rgb, task)
            video.write(image)
        if lines is not None:
            lines.write(_json_line(frame_pose_record(prediction.pose, frame_index=frame.index, fps=fps * self.every,
                                                     time_s=frame.time_s, tracks=tracks)))


def _at_smoothed_scale(prediction: Prediction, tracks) -> Prediction:
    """The prediction with its pointmap at the smoothed scale (the same object when there is nothing to do)."""
    factor = tracks.pointmap_factor
    if prediction.pointmap is None or factor == 1.0:
        return prediction
    pointmap = dataclasses.replace(prediction.pointmap, pointmap=prediction.pointmap.pointmap * np.float32(factor),
                                   scale=float(tracks.scale))
    return dataclasses.replace(prediction, pointmap=pointmap)


def predict_input(image: Any, *, source: Path | None = None, frame_index: int | None = None, boxes: Any = None):
    """What the predictor is fed: a :class:`~sapiens2.tasks.predictor.PredictInput` (imported lazily: torch)."""
    from sapiens2.tasks.predictor import PredictInput

    return PredictInput(image, source=source, frame_index=frame_index, boxes=boxes)


def _json_line(obj: dict) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


__all__ = ["InputFailure", "JobSummary", "PredictJob", "PredictorLike", "SourceItem", "VideoOptions", "VideoReport",
           "predict_input"]
