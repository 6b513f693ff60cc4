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

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sapiens2.io import DEFAULT_MAX_PIXELS, InputItem
from sapiens2.tasks.results import Prediction

# The bookkeeping types are re-exported here, where the job's users have always found them.
from .bookkeeping import (InputFailure, JobPlan, JobSummary, PredictorLike, SourceItem, VideoOptions, VideoReport,
                          failure_reason, predict_input, progress_bar)
from .completion import clear_record
from .image_batches import run_image_batches
from .outputs import OutputOptions
from .video_job import open_video_source, run_video

logger = logging.getLogger(__name__)


class PredictJob:
    """Run a predictor over discovered inputs and write every task's files under ``output_dir``.

    ``predictor``: anything with ``predict(x)`` and ``predict_many(xs)`` returning
    :class:`~sapiens2.tasks.results.Prediction` in input order, fed
    :class:`~sapiens2.inference.predictor.PredictInput` objects (``sapiens2.inference.predictor.Predictor``).
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
        self.predictor = predictor  # None only when the plan has nothing to predict (every input done)
        self.planner = JobPlan.make(tasks, output_dir, options, overwrite=overwrite, every=every, video=video,
                                    settings=settings)
        self.progress = progress
        self.read_workers = max(1, read_workers)
        self.write_workers = max(1, write_workers)
        self.max_pending = max(1, max_pending)
        self.boxes_for = boxes_for
        self.open_capture = open_capture  # replaces cv2.VideoCapture for cameras/streams/files (tests: fakes)

    # What decides the outputs lives in the plan; these read it.
    tasks = property(lambda self: list(self.planner.tasks))
    output_dir = property(lambda self: self.planner.output_dir)
    options = property(lambda self: self.planner.options)
    overwrite = property(lambda self: self.planner.overwrite)
    every = property(lambda self: self.planner.every)
    video = property(lambda self: self.planner.video)
    settings = property(lambda self: self.planner.settings)

    # ------------------------------------------------------------------ planning
    def item_settings(self, item) -> dict[str, Any]:
        """Everything that decides an input's outputs, as its completion record keeps it."""
        return self.planner.item_settings(item)

    def expected_outputs(self, item, base: Path) -> list[Path]:
        return self.planner.expected_outputs(item, base)

    def plan(self, items: Sequence[InputItem]) -> list[tuple[InputItem, Path, bool]]:
        """(item, output base, already done) for every input."""
        return self.planner.plan(items)

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
                count = open_video_source(self, item).frame_count
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
        self.planner = self.planner.with_pose_settings(self.predictor)  # pose files say how they were made
        plan = self.plan(items)
        summary.total = len(plan) + len(summary.failed)
        todo = [(item, base) for item, base, done in plan if not done]
        summary.skipped = len(plan) - len(todo)
        if summary.skipped:
            logger.info("skipping %d input(s) whose outputs exist (use --overwrite to redo them)", summary.skipped)
        for _, base in todo:  # outputs about to be replaced must not pass for complete if this run stops midway
            clear_record(base)
        bar = progress_bar(self.progress, self._estimated_work(plan) if self.progress else None)
        try:
            with ThreadPoolExecutor(self.write_workers, thread_name_prefix="s2-write") as writer:
                images = [(item, base) for item, base in todo if not item.is_video]
                if images:
                    run_image_batches(self, images, summary, writer, bar)
                for item, base in todo:
                    if item.is_video:
                        run_video(self, item, base, summary, writer, bar)
                        if summary.interrupted:
                            break
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("interrupted")
        finally:
            bar.close()
            summary.wall_s = time.perf_counter() - start
        return summary

    def record_failure(self, summary: JobSummary, path: Path, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else failure_reason(exc)
        logger.warning("skipped %s: %s", path, reason)
        summary.failed.append(InputFailure(Path(path), reason))

    def count_prediction(self, summary: JobSummary, prediction: Prediction, video: Path | None = None) -> None:
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

    @property
    def max_pixels(self) -> int | None:
        """The predictor's pixel limit applies to the files read for it (refused from their header)."""
        return getattr(self.predictor, "max_pixels", DEFAULT_MAX_PIXELS)


__all__ = ["InputFailure", "JobPlan", "JobSummary", "PredictJob", "PredictorLike", "SourceItem", "VideoOptions",
           "VideoReport", "predict_input"]
