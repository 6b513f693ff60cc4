"""The batch job behind ``sapiens2 predict``: images and videos in, files out, robust to bad inputs.

- Resume: an input whose outputs all exist is skipped unless ``overwrite`` (writes are atomic, so an existing
  file is a complete one).
- Bad inputs (unreadable, truncated, not an image, empty video) and per-input failures (a model error on one
  image, a failed write) are recorded with the reason and the job goes on.
- Overlap: images are read by a small thread pool ahead of the model, and files are written by another while
  the model runs on the next batch (OpenCV and NumPy release the GIL for decoding, encoding and file I/O).
  Memory stays bounded: at most a few batches are in flight. Video frames are streamed, never all held.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sapiens2.io import (InputItem, VideoReadError, VideoWriter, atomic_open,
                         load_image, open_video, should_skip)
from sapiens2.tasks.results import Prediction

from .naming import output_bases
from .outputs import (OutputOptions, frame_base, image_outputs, order_tasks, render_task, video_outputs,
                      with_suffix, write_prediction)
from .pose_json import frame_pose_record, pose_header

logger = logging.getLogger(__name__)


class PredictorLike(Protocol):
    def predict(self, image: Any) -> Prediction: ...
    def predict_many(self, images: Iterable[Any]) -> Iterator[Prediction]: ...


@dataclass
class InputFailure:
    path: Path
    reason: str


@dataclass
class JobSummary:
    """What a job did. ``images``/``frames`` count predictions made; ``stage_s`` sums ``Prediction.timings``."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[InputFailure] = field(default_factory=list)
    images: int = 0
    frames: int = 0
    people: int = 0
    files_written: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)

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
        out = [f"inputs: {self.total} ({self.done} done, {self.skipped} skipped, {len(self.failed)} failed)",
               f"predicted: {self.images} image(s), {self.frames} video frame(s); people found: {self.people}",
               f"time: {self.wall_s:.1f} s, {self.per_second:.2f} images/s; files written: {self.files_written}"]
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
    """

    def __init__(self, predictor: PredictorLike, tasks: Sequence[str], output_dir: str | Path,
                 options: OutputOptions | None = None, *, overwrite: bool = False, every: int = 1,
                 progress: bool = False, read_workers: int = 2, write_workers: int = 2, max_pending: int = 8,
                 boxes_for: Callable[[InputItem], Any] | None = None):
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

    # ------------------------------------------------------------------ planning
    def plan(self, items: Sequence[InputItem]) -> list[tuple[InputItem, Path, bool]]:
        """(item, output base, already done) for every input."""
        plan = []
        for item, base in zip(items, output_bases(items, self.output_dir)):
            expected = video_outputs(base, self.tasks) if item.is_video else image_outputs(base, self.tasks,
                                                                                               self.options)
            plan.append((item, base, should_skip(expected, self.overwrite)))
        return plan

    def _estimated_work(self, plan) -> int:
        total = 0
        for item, _, done in plan:
            if done:
                continue
            if not item.is_video:
                total += 1
                continue
            try:
                total += math.ceil(max(open_video(item.path).frame_count, 1) / self.every)
            except VideoReadError:
                total += 1  # it will fail and be counted as one unit
        return total

    # ------------------------------------------------------------------ running
    def run(self, items: Sequence[InputItem], failures: Iterable[InputFailure] = ()) -> JobSummary:
        """Process ``items``; ``failures`` (e.g. missing paths found during discovery) are added to the summary."""
        start = time.perf_counter()
        summary = JobSummary()
        summary.failed.extend(failures)
        plan = self.plan(items)
        summary.total = len(plan) + len(summary.failed)
        todo = [(item, base) for item, base, done in plan if not done]
        summary.skipped = len(plan) - len(todo)
        if summary.skipped:
            logger.info("skipping %d input(s) whose outputs exist (use --overwrite to redo them)", summary.skipped)
        bar = _progress_bar(self.progress, self._estimated_work(plan) if self.progress else None)
        try:
            with ThreadPoolExecutor(self.write_workers, thread_name_prefix="s2-write") as writer:
                images = [(item, base) for item, base in todo if not item.is_video]
                if images:
                    self._run_images(images, summary, writer, bar)
                for item, base in todo:
                    if item.is_video:
                        self._run_video(item, base, summary, writer, bar)
        finally:
            bar.close()
            summary.wall_s = time.perf_counter() - start
        return summary

    def _fail(self, summary: JobSummary, path: Path, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else _reason(exc)
        logger.warning("skipped %s: %s", path, reason)
        summary.failed.append(InputFailure(Path(path), reason))

    def _count(self, summary: JobSummary, prediction: Prediction) -> None:
        summary.add_timings(prediction.timings)
        if prediction.pose is not None:
            summary.people += prediction.pose.num_people

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
                    window.append((job[0], job[1], reader.submit(load_image, job[0].path)))

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
            for job in loaded_stream:
                inflight.append(job)
                yield request(job)

        def finish(item: InputItem, future: Future) -> None:
            try:
                summary.files_written += len(future.result())
                summary.done += 1
            except Exception as exc:  # a failed write fails this input only
                self._fail(summary, item.path, exc)

        def accept(job, prediction: Prediction) -> None:
            item, base, loaded = job
            if prediction.pose is not None and prediction.pose.box_source == "given":
                prediction.pose.box_source = "file"  # the only boxes this job gives are from --boxes files
            self._count(summary, prediction)
            summary.images += 1
            writes.append((item, writer.submit(write_prediction, prediction, loaded.rgb, base, self.tasks,
                                               self.options)))
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

    # ------------------------------------------------------------------ videos
    def _run_video(self, item: InputItem, base: Path, summary: JobSummary, writer: ThreadPoolExecutor,
                   bar) -> None:
        try:
            source = open_video(item.path)
        except VideoReadError as exc:
            self._fail(summary, item.path, exc)
            bar.update(1)
            return
        fps = source.fps / self.every
        inflight: deque[tuple[int, np.ndarray]] = deque()
        frame_writes: deque[Future] = deque()
        files = 0
        people = 0

        def feed() -> Iterator[Any]:
            for index, rgb in source.frames(step=self.every):
                inflight.append((index, rgb))
                yield predict_input(rgb, frame_index=index)

        def drain(limit: int) -> int:
            written = 0
            while len(frame_writes) > limit or (frame_writes and frame_writes[0].done()):
                written += len(frame_writes.popleft().result())  # a failed write fails the whole video
            return written

        try:
            with ExitStack() as stack:
                videos = {task: stack.enter_context(VideoWriter(with_suffix(base, f".{task}.mp4"), fps))
                          for task in self.tasks}
                pose_lines = None
                if "pose" in self.tasks:
                    pose_lines = stack.enter_context(atomic_open(with_suffix(base, ".pose.jsonl"), "w"))
                    header = pose_header(model=self.options.model_names.get("pose"), fps=fps, kind="video",
                                         image_size=(source.height, source.width))
                    header.update(source_fps=source.fps, every=self.every)
                    pose_lines.write(_json_line(header))
                # Annotated videos are rendered and encoded on one extra thread, in frame order. Entered last
                # so that on an error it finishes before the writers it feeds are discarded.
                sink = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="s2-video"))
                sink_jobs: deque[Future] = deque()
                frames = 0
                for prediction in self.predictor.predict_many(feed()):
                    index, rgb = inflight.popleft()
                    prediction.frame_index = index
                    self._count(summary, prediction)
                    frames += 1
                    if prediction.pose is not None:
                        people += prediction.pose.num_people
                    frame_writes.append(writer.submit(write_prediction, prediction, rgb, frame_base(base, index),
                                                      self.tasks, self.options, video_frame=True))
                    sink_jobs.append(sink.submit(self._video_frame, prediction, rgb, videos, pose_lines, fps))
                    while len(sink_jobs) > self.max_pending or (sink_jobs and sink_jobs[0].done()):
                        sink_jobs.popleft().result()
                    files += drain(self.max_pending)
                    bar.update(1)
                for job in sink_jobs:
                    job.result()
                files += drain(0)
                if frames == 0:
                    raise VideoReadError(item.path, "no frame could be decoded")
                # leaving the stack publishes the JSON Lines and the videos (all or none on error)
            summary.frames += frames
            summary.files_written += files + len(videos) + (pose_lines is not None)
            summary.done += 1
            logger.info("%s: %d frame(s), %d people-frame(s)", item.path, frames, people)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            for future in frame_writes:
                future.cancel()
            self._fail(summary, item.path, exc)

    def _video_frame(self, prediction: Prediction, rgb: np.ndarray, videos: dict[str, VideoWriter],
                     pose_lines, fps: float) -> None:
        for task, video in videos.items():
            video.write(render_task(prediction, rgb, task))
        if pose_lines is not None:
            pose_lines.write(_json_line(frame_pose_record(prediction.pose, frame_index=prediction.frame_index,
                                                          fps=fps * self.every)))


def predict_input(image: Any, *, source: Path | None = None, frame_index: int | None = None, boxes: Any = None):
    """What the predictor is fed: a :class:`~sapiens2.tasks.predictor.PredictInput` (imported lazily: torch)."""
    from sapiens2.tasks.predictor import PredictInput

    return PredictInput(image, source=source, frame_index=frame_index, boxes=boxes)


def _json_line(obj: dict) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"


__all__ = ["InputFailure", "JobSummary", "PredictJob", "PredictorLike", "predict_input"]
