"""Live video: keep up with a camera by dropping frames, and find people from the previous frame's keypoints.

- :class:`LatestFrameGrabber` reads a source on its own thread at the source's rate and keeps only the newest
  frame (latest-frame-wins): when the model is slower than the camera, the frames it had no time for are dropped
  (counted), never queued, so the delay between capture and result stays one model pass, not a growing backlog.
  A file source can be paced at its frame rate (``pace_fps``) so that it plays like a camera.
- :class:`KeypointBoxes` decides, frame by frame, where the pose crops go: the box around each tracked person's
  confident keypoints of the previous result (expanded), or a fresh detection: at the start, every
  ``redetect_every`` frames, and whenever tracking confidence drops (a person with too few confident keypoints or
  a low mean score, or nobody left). New people entering the view are found at the next detection.
- :class:`LiveStats`: frames read / processed / dropped, frames per second and the capture-to-result latency
  (p50 / p95), live (a rolling rate) and at the end.

No model and no torch here: :mod:`sapiens2.serving.live_job` runs the predictor with these.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sapiens2.tasks.results import PoseResult

from .similarity import box_iou
from .sources import Frame

Clock = Callable[[], float]


@dataclass(frozen=True)
class Grabbed:
    """A frame as the grabber read it: ``captured_s`` is the clock when it was read (latency starts there),
    ``seq`` the count of frames read before it (0-based, so ``seq`` gaps are the frames dropped in between)."""

    frame: Frame
    captured_s: float
    seq: int


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class LatestFrameGrabber:
    """Read ``frames`` (e.g. ``source.frames()``) on a thread; :meth:`take` returns the newest frame not taken yet.

    A frame replaced by a newer one before it was taken is dropped: ``read == taken + dropped`` once closed
    (a frame still waiting when the grabber is closed counts as dropped). ``pace_fps``: read at most that many
    frames per second of ``clock`` (a file played at its frame rate, like a camera); None reads as fast as the
    source gives frames (cameras and streams set their own pace). An exception of the source is raised by
    :meth:`take` once the frame before it has been taken.
    """

    def __init__(self, frames: Iterable[Frame], *, pace_fps: float | None = None, clock: Clock = time.perf_counter,
                 name: str = "s2-grab"):
        if pace_fps is not None and not pace_fps > 0:
            raise ValueError(f"pace_fps must be > 0, got {pace_fps}")
        self.pace_fps = pace_fps
        self.clock = clock
        self.read = 0
        self.taken = 0
        self.dropped = 0
        self._items = iter(frames)
        self._cond = threading.Condition()
        self._slot: Grabbed | None = None
        self._ended = False
        self._failure: _Failure | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        began = None
        try:
            for frame in self._items:
                if self._stop.is_set():
                    break
                now = self.clock()
                if self.pace_fps is not None:
                    began = now if began is None else began
                    due = began + self.read / self.pace_fps
                    if due > now and self._stop.wait(due - now):
                        break
                    now = self.clock()
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1  # the model never saw it: a newer frame replaces it
                    self._slot = Grabbed(frame, now, self.read)
                    self.read += 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, which decides
            with self._cond:
                self._failure = _Failure(exc)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None and self._stop.is_set():
                close()  # release the capture of an abandoned generator in the thread that ran it
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    @property
    def ended(self) -> bool:
        """The source has no more frames (or the grabber was closed)."""
        return self._ended

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Wait until the source has no more frames; False if ``timeout`` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ended, timeout)

    def take(self, timeout: float | None = None) -> Grabbed | None:
        """The newest frame not taken yet, waiting for one; None when the source has ended (or ``timeout``
        seconds passed without a frame)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout):
                return None
            grabbed, self._slot = self._slot, None
            if grabbed is None:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure.exc
                return None
            self.taken += 1
            return grabbed

    def close(self) -> None:
        """Stop reading (the frame being read is finished) and wait for the thread; a frame still waiting counts
        as dropped."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=10)
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
                self._slot = None

    def __enter__(self) -> LatestFrameGrabber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------- box reuse
@dataclass(frozen=True)
class BoxReuseOptions:
    """When and how pose boxes come from the previous frame's keypoints (see :class:`KeypointBoxes`).

    ``redetect_every``: run the detector at least every N processed frames (1 = every frame, i.e. no reuse).
    ``keypoint_score``: keypoints scoring at least this are *confident* and make the box. ``min_keypoints``: a
    person with fewer confident keypoints is lost (re-detect). ``min_confidence``: re-detect when a person's mean
    keypoint score falls below this. ``expand``: the box around the confident keypoints is scaled by this about
    its centre (keypoints are joints, the body extends past them). ``min_side``: boxes are at least this many
    pixels wide and high. ``max_overlap``: of two reused boxes overlapping more (IoU), the less confident goes
    (two tracks that slid onto one person)."""

    redetect_every: int = 30
    keypoint_score: float = 0.3
    min_keypoints: int = 6
    min_confidence: float = 0.3
    expand: float = 1.25
    min_side: float = 16.0
    max_overlap: float = 0.8

    def __post_init__(self):
        if self.redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {self.redetect_every}")
        if self.min_keypoints < 2:
            raise ValueError(f"min_keypoints must be >= 2 (a box needs two points), got {self.min_keypoints}")
        if not self.expand >= 1.0:
            raise ValueError(f"expand must be >= 1, got {self.expand}")


#: Why a frame's boxes come from the detector (the keys of :attr:`KeypointBoxes.detections`).
DETECT_REASONS = ("start", "interval", "low_confidence", "no_people")


class KeypointBoxes:
    """Pose boxes for the next frame: from the previous result's keypoints, or None (= run the detector).

    Per frame: ``boxes, reason = kb.next_boxes((H, W))``; run pose with ``boxes`` (None: the detector); then
    ``kb.update(pose)``. ``reason`` is None for reused boxes, else one of :data:`DETECT_REASONS`;
    ``detections`` counts them, ``reused`` counts the frames that skipped the detector.
    """

    def __init__(self, options: BoxReuseOptions | None = None):
        self.options = options or BoxReuseOptions()
        self.detections: dict[str, int] = dict.fromkeys(DETECT_REASONS, 0)
        self.reused = 0
        self._boxes: np.ndarray | None = None  # (P, 5) boxes from the last result, None = detect next
        self._reason: str = "start"
        self._since_detect = 0

    @property
    def detector_calls(self) -> int:
        return sum(self.detections.values())

    def next_boxes(self, image_hw: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
        """(boxes (P, 5) xyxy + score, None) to reuse, or (None, reason) to detect."""
        if self._boxes is None:
            reason = self._reason
        elif self._since_detect >= self.options.redetect_every:
            reason = "interval"
        else:
            self.reused += 1
            self._since_detect += 1
            return _clip_boxes(self._boxes, image_hw, self.options.min_side), None
        self.detections[reason] += 1
        self._since_detect = 1
        return None, reason

    def update(self, pose: PoseResult | None) -> None:
        """Take the frame's result: the boxes of its people for the next frame, or a reason to detect."""
        self._boxes = None
        if pose is None or pose.num_people == 0 or pose.whole_image_fallback:
            self._reason = "no_people"
            return
        opts = self.options
        boxes, scores = [], []
        for keypoints, kp_scores in zip(np.asarray(pose.keypoints, np.float64), np.asarray(pose.scores, np.float64)):
            confidence = float(np.nanmean(kp_scores)) if kp_scores.size else 0.0
            confident = (kp_scores >= opts.keypoint_score) & np.isfinite(keypoints).all(axis=1)
            if confident.sum() < opts.min_keypoints or not confidence >= opts.min_confidence:
                self._reason = "low_confidence"
                return
            boxes.append(keypoint_box(keypoints[confident], opts.expand))
            scores.append(confidence)
        order = np.argsort(-np.asarray(scores), kind="stable")
        kept: list[int] = []
        for i in order:  # the most confident first; a box mostly covering a kept one goes
            if not kept or box_iou(boxes[i], np.asarray([boxes[k] for k in kept])).max() <= opts.max_overlap:
                kept.append(int(i))
        kept.sort()
        self._boxes = np.array([[*boxes[i], scores[i]] for i in kept], dtype=np.float32)


def keypoint_box(points: np.ndarray, expand: float) -> np.ndarray:
    """(N, 2) points -> their xyxy bounding box scaled by ``expand`` about its centre."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * expand
    return np.concatenate([centre - half, centre + half])


def _clip_boxes(boxes: np.ndarray, image_hw: tuple[int, int], min_side: float) -> np.ndarray:
    """Boxes cut to the image; a side shorter than ``min_side`` (at most the image's) grows about its centre."""
    h, w = image_hw
    out = np.array(boxes, dtype=np.float32, copy=True)
    for lo, hi, limit in ((0, 2, float(w - 1)), (1, 3, float(h - 1))):
        for row in out:
            a, b = min(max(row[lo], 0.0), limit), min(max(row[hi], 0.0), limit)
            side = min(max(b - a, min_side), limit)
            if b - a < side:
                a = min(max((a + b - side) / 2, 0.0), limit - side)
                b = a + side
            row[lo], row[hi] = a, b
    return out


# ----------------------------------------------------------------------------------------------- statistics
@dataclass
class LiveStats:
    """Counts and timings of a live run. ``record(captured_s, done_s)`` per processed frame; ``rolling_fps``
    over the last ``window`` results; :meth:`summary` at the end (``read``/``dropped`` from the grabber)."""

    window: int = 30
    processed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    started_s: float | None = None
    last_s: float | None = None
    _recent: deque = field(default_factory=deque)

    def start(self, now: float) -> None:
        self.started_s = now

    def record(self, captured_s: float, done_s: float) -> float:
        """Count one result; returns its latency (seconds from capture to result)."""
        latency = max(done_s - captured_s, 0.0)
        self.processed += 1
        self.latencies_s.append(latency)
        self.last_s = done_s
        self._recent.append(done_s)
        while len(self._recent) > self.window:
            self._recent.popleft()
        return latency

    @property
    def rolling_fps(self) -> float:
        """Results per second over the last ``window`` results (0 before two results)."""
        if len(self._recent) < 2 or self._recent[-1] <= self._recent[0]:
            return 0.0
        return (len(self._recent) - 1) / (self._recent[-1] - self._recent[0])

    @property
    def wall_s(self) -> float:
        if self.started_s is None or self.last_s is None:
            return 0.0
        return max(self.last_s - self.started_s, 0.0)

    @property
    def fps(self) -> float:
        """Results per second from the start to the last result."""
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def latency_ms(self, percentile: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(np.asarray(self.latencies_s) * 1000.0, percentile))

    def summary(self, *, read: int, dropped: int) -> dict[str, Any]:
        def ms(p):
            value = self.latency_ms(p)
            return None if value is None else round(value, 2)

        return {"frames_read": int(read), "frames_processed": self.processed, "frames_dropped": int(dropped),
                "wall_s": round(self.wall_s, 3), "fps": round(self.fps, 3), "latency_ms_p50": ms(50),
                "latency_ms_p95": ms(95), "latency_ms_max": ms(100)}


def progress_text(stats: LiveStats, *, read: int, dropped: int, latency_s: float) -> str:
    """The live progress line."""
    return (f"live: {stats.processed} frame(s), {stats.rolling_fps:5.1f} FPS, latency {latency_s * 1000:6.1f} ms, "
            f"read {read}, dropped {dropped}")


__all__ = ["BoxReuseOptions", "DETECT_REASONS", "Grabbed", "KeypointBoxes", "LatestFrameGrabber", "LiveStats",
           "keypoint_box", "progress_text"]

