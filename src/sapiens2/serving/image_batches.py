"""The predict job's image pipeline: images read ahead on a small thread pool, predicted in the predictor's
batches (a failed batch is retried image by image so only the culprit fails), files written on the job's writer
pool while the model runs on the next batch. Memory stays bounded: at most a few batches are in flight."""
from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sapiens2.io import InputItem, load_image
from sapiens2.tasks.results import Prediction

from .bookkeeping import JobSummary, RunningJob, predict_input
from .completion import write_record
from .outputs import write_prediction

logger = logging.getLogger("sapiens2.serving.runner")  # the job's log, wherever its parts live


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """(fn's result, its seconds): how a worker thread reports its own time (exceptions pass through)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _waited(summary: JobSummary, stage: str, future: Future):
    """``future.result()``, the time the job's thread waited for it added to ``summary.stage_s[stage]``."""
    start = time.perf_counter()
    try:
        return future.result()
    finally:
        summary.add_timings({stage: time.perf_counter() - start})


def prefetch_images(predict_job: RunningJob, jobs, summary: JobSummary, bar) -> Iterator[tuple[InputItem, Path, Any]]:
    """Yield (item, base, loaded image) in order, reading a few images ahead on worker threads."""
    lookahead = predict_job.max_pending + predict_job.read_workers
    with ThreadPoolExecutor(predict_job.read_workers, thread_name_prefix="s2-read") as reader:
        window: deque[tuple[InputItem, Path, Future]] = deque()
        pending = iter(jobs)

        def top_up() -> None:
            while len(window) < lookahead:
                job = next(pending, None)
                if job is None:
                    return
                window.append((job[0], job[1], reader.submit(_timed, load_image, job[0].path,
                                                             max_pixels=predict_job.max_pixels)))

        top_up()
        while window:
            item, base, future = window.popleft()
            top_up()
            try:
                loaded, seconds = _waited(summary, "wait_read", future)
            except Exception as exc:  # ImageReadError and anything else a broken file triggers
                predict_job.record_failure(summary, item.path, exc)
                bar.update(1)
                continue
            summary.add_timings({"read": seconds})
            yield item, base, loaded


def _predictions(predictor, requests):
    """The predictor's stream; a batch's post-processing overlapping the next batch's forward pass where the
    predictor offers it (the Predictor: ``overlaps_batches``), since the job only needs predictions in order."""
    if getattr(predictor, "overlaps_batches", False):
        return predictor.predict_many(requests, overlap=True)
    return predictor.predict_many(requests)


def run_image_batches(predict_job: RunningJob, jobs, summary: JobSummary, writer: ThreadPoolExecutor, bar) -> None:
    inflight: deque[tuple[InputItem, Path, Any]] = deque()
    writes: deque[tuple[InputItem, Future]] = deque()
    loaded_stream = prefetch_images(predict_job, jobs, summary, bar)

    def fail(path: Path, exc: BaseException) -> None:  # this input alone; it counts as processed
        predict_job.record_failure(summary, path, exc)
        bar.update(1)

    def request(job):
        item, _, loaded = job
        boxes = predict_job.boxes_for(item) if predict_job.boxes_for is not None else None
        return predict_input(loaded, source=item.path, boxes=boxes)

    def feed() -> Iterator[Any]:
        # Nothing may raise out of this generator: an exception would end it and drop every later input.
        for job in loaded_stream:
            try:
                next_request = request(job)
            except Exception as exc:  # e.g. a broken boxes file: this input only
                fail(job[0].path, exc)
                continue
            inflight.append(job)
            yield next_request

    def finish(item: InputItem, future: Future) -> None:
        try:
            written, seconds = _waited(summary, "wait_write", future)
        except Exception as exc:  # a failed write fails this input only (no completion record: redone next run)
            predict_job.record_failure(summary, item.path, exc)
            return
        summary.add_timings({"write": seconds})
        summary.files_written += len(written)
        summary.done += 1

    def accept(job, prediction: Prediction) -> None:
        item, base, loaded = job
        if getattr(prediction, "error", None) is not None:  # the predictor isolated this input's failure
            fail(item.path, prediction.error)
            return
        if prediction.pose is not None and prediction.pose.box_source == "given":
            prediction.pose.box_source = "file"  # the only boxes this job gives are from --boxes files
        predict_job.count_prediction(summary, prediction)
        summary.images += 1
        writes.append((item, writer.submit(_timed, write_image_outputs, predict_job, prediction, loaded.rgb, item,
                                           base)))
        # bounded: at most max_pending outputs queued behind the model; the job waits only when writers fall behind
        while len(writes) > predict_job.max_pending or (writes and writes[0][1].done()):
            finish(*writes.popleft())
        bar.update(1)

    source = feed()
    while True:
        try:
            for prediction in _predictions(predict_job.predictor, source):
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
                    prediction = predict_job.predictor.predict(request(job))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as single:
                    fail(job[0].path, single)
                    continue
                accept(job, prediction)
    while writes:
        finish(*writes.popleft())


def write_image_outputs(predict_job: RunningJob, prediction: Prediction, rgb, item, base: Path) -> list[Path]:
    written = write_prediction(prediction, rgb, base, predict_job.tasks, predict_job.options)
    write_record(base, item.path, written, predict_job.item_settings(item))  # last: marks the input done
    return written


__all__ = ["prefetch_images", "run_image_batches", "write_image_outputs"]
