"""Server-side batching: requests from many clients become one ``predict_many`` call (one forward per task).

One dispatcher thread gathers batches: it waits for a free inference thread, takes the first waiting request,
then gathers more for up to ``wait_ms`` or until ``max_batch`` are in hand, and hands the batch to one of
``inference_threads`` threads, so the model never runs on the event loop. With one inference thread batches run
one after another (as on a GPU, where one device queue runs them anyway). With more, that many batches run at
once on the same predictor (one copy of the weights): on a CPU one forward with one intra-op thread uses about one
core, and torch releases the GIL inside its ops, so two batches use two cores; a batch's pre- and post-processing
also overlaps the other's forward. Requests arriving while every inference thread is busy wait in the queue and
make the next batch larger. Work that must run alone (a video job) goes through the same queue as a callable and
runs once every in-flight batch has finished, with no batch beside it.
The queue is bounded: a full queue raises :class:`ServerBusy` at once (the HTTP layer answers 503 with
Retry-After) instead of letting waiting requests pile up without limit.

The service :meth:`Batcher.announce`-s each request when it arrives (before its upload is read and decoded). The
worker then waits for more inputs only while some announced request has not been submitted yet: a lone client's
request runs at once instead of sitting out the wait (5 ms, about a tenth of the tiny model's forward on a CPU),
and under load the wait still gathers the requests being decoded.

No web framework is imported here: the batcher is plain threads and futures, usable and testable on its own.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sapiens2.errors import Sapiens2Error

logger = logging.getLogger(__name__)
_POLL_S = 0.001  # while waiting for announced requests, how often the worker looks whether any is left


class ServerBusy(Sapiens2Error):
    """The request queue is full (or the server is shutting down); try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class PredictionFailed(Sapiens2Error):
    """The model failed on one request (the others of its batch are answered normally)."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


@dataclass
class _Job:
    future: Future
    item: Any = None  # a PredictInput for the batched path
    call: Callable[[], Any] | None = None  # exclusive work (run alone, no batch beside it)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher has done (``/health`` shows it; tests and the benchmark check batching with it)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    calls: int = 0
    sizes: list[int] = field(default_factory=list)  # the last few batch sizes
    running: int = 0  # batches in the predictor now
    most_running: int = 0  # most batches that were in the predictor at once (> 1: inference threads overlapped)

    def add(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)
        self.sizes = (self.sizes + [size])[-64:]

    def started(self) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)

    def finished(self) -> None:
        self.running -= 1


class Batcher:
    """Gather :meth:`submit`-ted inputs into ``predictor.predict_many`` calls run on ``inference_threads`` threads.

    ``max_batch``: most inputs per call (1 turns batching off: one request, one call). ``wait_ms``: how long the
    dispatcher waits for more inputs after the first one. ``max_queue``: waiting inputs beyond which :meth:`submit`
    raises :class:`ServerBusy`. ``inference_threads``: most ``predict_many`` calls running at once (the predictor
    must allow concurrent calls when > 1; :class:`~sapiens2.inference.predictor.Predictor` does in eager mode).
    """

    def __init__(self, predictor: Any, *, max_batch: int = 8, wait_ms: float = 5.0, max_queue: int = 64,
                 wait_for_announced: bool = False, inference_threads: int = 1):
        if max_batch < 1 or max_queue < 1 or inference_threads < 1:
            raise Sapiens2Error(f"max_batch, max_queue and inference_threads must be >= 1, got {max_batch}, "
                                f"{max_queue} and {inference_threads}")
        self.predictor = predictor
        self.max_batch = int(max_batch)
        self.wait_s = max(0.0, float(wait_ms)) / 1000.0
        # True: wait only while announced requests are on their way (module doc); False: always up to wait_ms
        self.wait_for_announced = bool(wait_for_announced)
        self._announced = 0
        self._announced_lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=int(max_queue))
        self._closing = False
        self.stats = BatchStats()
        self.inference_threads = int(inference_threads)
        # a slot per inference thread: the dispatcher takes one before gathering a batch, the batch frees it
        self._slots = threading.Semaphore(self.inference_threads)
        self._stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.inference_threads, thread_name_prefix="s2-model")
        self._thread = threading.Thread(target=self._work, name="s2-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def announce(self) -> "Announcement":
        """Say that a request is on its way (its upload being read); :meth:`Announcement.close` when it is
        submitted or has failed. Used with ``wait_for_announced``."""
        with self._announced_lock:
            self._announced += 1
        return Announcement(self)

    def _unannounce(self) -> None:
        with self._announced_lock:
            self._announced -= 1

    def submit(self, item: Any, announced: "Announcement | None" = None) -> Future:
        """Queue one predictor input; the future gets its Prediction, or :class:`PredictionFailed`.
        ``announced``: this request's :meth:`announce` ticket, closed as it is queued."""
        if announced is not None:
            announced.close()
        return self._put(_Job(Future(), item=item))

    def run_exclusive(self, call: Callable[[], Any]) -> Future:
        """Queue ``call`` to run alone, no batch beside it (e.g. a video job using the predictor)."""
        return self._put(_Job(Future(), call=call))

    def _put(self, job: _Job) -> Future:
        if self._closing:
            raise ServerBusy("the server is shutting down", retry_after=5)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ServerBusy(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    def close(self, timeout: float | None = 60.0) -> None:
        """Stop taking work, finish what is queued and running (graceful shutdown), stop the threads."""
        if self._closing:
            return
        self._closing = True
        self._queue.put(None)  # blocks only while the queue is full, i.e. until the worker takes a job
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker
    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """``first`` and what else arrives within the wait (batched inputs only). Returns the batch, an
        exclusive job or stop marker met while gathering (run after the batch), and whether to stop."""
        batch = [first]
        deadline = time.perf_counter() + self.wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            if self.wait_for_announced:
                if self._announced == 0:
                    remaining = 0  # nothing on its way: take what is queued now, wait for nothing
                else:
                    remaining = min(remaining, _POLL_S)  # notice when the last announced request gives up
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                if self.wait_for_announced and self._announced and time.perf_counter() < deadline:
                    continue
                break
            if job is None:
                return batch, None, True
            if job.call is not None:
                return batch, job, False
            batch.append(job)
        return batch, None, False

    def _work(self) -> None:
        held: _Job | None = None
        stop = False
        while True:
            self._slots.acquire()  # a free inference thread first: meanwhile arriving requests wait and batch up
            job = held if held is not None else (None if stop else self._queue.get())
            held = None
            if job is None:
                self._slots.release()
                break
            if job.call is not None:
                self._run_call(job)
                continue
            batch, held, stop_now = self._gather(job)
            stop = stop or stop_now
            self._dispatch(batch)
            if stop and held is None:
                # the stop marker was met while gathering: finish anything queued after it first
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not None:
                        self._slots.acquire()
                        self._run_call(rest) if rest.call is not None else self._dispatch([rest])
                break
        self._pool.shutdown(wait=True)  # the batches still running finish

    def _run_call(self, job: _Job) -> None:
        """Run an exclusive job on this thread once every in-flight batch is done (holding all the slots, so no
        batch starts beside it). Called holding one slot; returns having released them all."""
        for _ in range(self.inference_threads - 1):
            self._slots.acquire()
        try:
            if not job.future.set_running_or_notify_cancel():
                return
            self.stats.calls += 1
            try:
                job.future.set_result(job.call())
            except BaseException as exc:  # the caller gets it; the batcher keeps serving
                job.future.set_exception(exc)
        finally:
            for _ in range(self.inference_threads):
                self._slots.release()

    def _dispatch(self, batch: Sequence[_Job]) -> None:
        """Hand ``batch`` to an inference thread (called holding the slot it frees when done)."""
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            self._slots.release()
            return
        with self._stats_lock:
            self.stats.add(len(batch))
            self.stats.started()
        self._pool.submit(self._run_batch, batch)

    def _run_batch(self, batch: Sequence[_Job]) -> None:
        try:
            self._predict(batch)
        finally:
            with self._stats_lock:
                self.stats.finished()
            self._slots.release()

    def _predict(self, batch: Sequence[_Job]) -> None:
        try:
            # batch_size = the whole group: one forward per task for everything gathered
            predictions = list(self.predictor.predict_many([job.item for job in batch], batch_size=len(batch)))
            if len(predictions) != len(batch):
                raise RuntimeError(f"the predictor returned {len(predictions)} result(s) for {len(batch)} input(s)")
        except Exception as exc:  # predict_many isolates per-input failures; this is the predictor itself failing
            logger.exception("batch of %d failed", len(batch))
            for job in batch:
                job.future.set_exception(PredictionFailed(exc))
            return
        for job, prediction in zip(batch, predictions):
            error = getattr(prediction, "error", None)
            if error is not None:
                job.future.set_exception(PredictionFailed(error))
            else:
                job.future.set_result(prediction)


class Announcement:
    """One announced request (:meth:`Batcher.announce`); closing it twice counts once."""

    def __init__(self, batcher: Batcher):
        self._batcher: Batcher | None = batcher

    def close(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None:
            batcher._unannounce()


__all__ = ["Announcement", "BatchStats", "Batcher", "PredictionFailed", "ServerBusy"]
