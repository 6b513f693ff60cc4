"""Decode ahead: a reader thread fills a bounded queue of frames while the model works on earlier ones.

OpenCV's decoder and colour conversion release the GIL, so a thread overlaps decoding with the model well; a
process would have to copy every frame between processes. Memory stays bounded by ``depth`` frames. The consumer's
time blocked waiting for a frame is measured (``wait_s``): it is the time the model sits idle because decoding
is behind. With ``depth=0`` frames are decoded in the consumer's thread (no overlap; decoding counts as waiting).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_DEPTH = 8
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate ``items`` (any iterator, e.g. ``source.frames()``) through a reader thread and a queue of
    ``depth`` items. Use as an iterator; :meth:`close` (or leaving a ``with`` block) stops the reader early.

    ``wait_s``: seconds :meth:`__next__` spent waiting for an item; ``count``: items delivered. An exception
    raised by the producer is re-raised in the consumer after the items before it.
    """

    def __init__(self, items: Iterable[T], depth: int = DEFAULT_DEPTH, *, name: str = "s2-decode"):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.depth = depth
        self.wait_s = 0.0
        self.count = 0
        self._items = iter(items)
        self._stop = threading.Event()
        self._finished = False
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
            self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which decides
            self._put(_Failure(exc))
            return
        finally:
            close = getattr(self._items, "close", None)
            if close is not None and self._stop.is_set():
                close()  # release the capture of an abandoned generator in the thread that ran it
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        start = time.perf_counter()
        try:
            if self._queue is None:
                try:
                    item = next(self._items)
                except StopIteration:
                    self._finished = True
                    raise
            else:
                item = self._queue.get()
        finally:
            self.wait_s += time.perf_counter() - start
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.exc
        self.count += 1
        return item

    def close(self) -> None:
        """Stop the reader (it finishes the item in hand) and wait for it."""
        self._finished = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif hasattr(self._items, "close"):
            self._items.close()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["DEFAULT_DEPTH", "Prefetcher"]
