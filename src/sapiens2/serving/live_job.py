"""Live mode (``sapiens2 predict --live``): one camera, stream or video at the rate the model keeps up with.

The source is read on a grabber thread that keeps only the newest frame (:class:`~sapiens2.video.live.
LatestFrameGrabber`): frames the model had no time for are dropped, never queued, so the result shown is at most
one model pass behind the camera. Pose boxes come from the previous frame's keypoints; the detector runs at the
start, every ``redetect_every`` frames and when tracking confidence drops (:class:`~sapiens2.video.live.
KeypointBoxes`). People are tracked and smoothed as in the video job.

Outputs, for an output base ``B``: ``B.pose.jsonl`` (or ``B.frames.jsonl`` for pointmap without pose: the video
job's header and per-frame records, plus the capture-to-result ``latency_ms`` and where the boxes came from) and
``B.live.json`` (the summary: frames read / processed / dropped, FPS, latency p50 / p95, detector calls); with
``record`` an annotated video (overlay, FPS and latency) at the source's frame rate, each result held for the
frames dropped after it so that it plays in real time; with a display, a window (``q`` or Esc stops).

Python::

    session = LiveSession(predictor, "0", LiveOptions(redetect_every=30, max_frames=300))
    for result in session.results():  # LiveResult: frame, prediction, tracks, latency_s, detect_reason
        ...
    print(session.summary())

or :func:`run_live` for the whole thing with its files.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io import DEFAULT_MAX_PIXELS, VideoWriter, atomic_open, write_json
from sapiens2.tasks.results import Prediction
from sapiens2.video.live import BoxReuseOptions, Grabbed, KeypointBoxes, LatestFrameGrabber, LiveStats, progress_text

from .bookkeeping import predict_input
from .outputs import video_jsonl_suffix, with_suffix
from .pose_json import frame_pose_record, pose_header
from .video_job import json_line

logger = logging.getLogger(__name__)

LIVE_SUMMARY_SUFFIX = ".live.json"
#: The pose JSON Lines' ``box_source`` of a frame whose boxes came from the previous frame's keypoints.
REUSED_BOXES = "previous_keypoints"


@dataclass(frozen=True)
class LiveOptions:
    """``boxes``: when pose boxes are reused (:class:`~sapiens2.video.live.BoxReuseOptions`, its
    ``redetect_every`` included). ``max_frames``: stop after this many processed frames. ``start``/``end``: source
    frame indices to read from / stop before. ``pace``: read the source no faster than its frame rate (None:
    files and folders yes, as a camera would deliver them; cameras and streams set their own pace).
    ``track``/``smoothing``: as for videos. ``fps``: the source's frame rate when it reports none."""

    boxes: BoxReuseOptions = field(default_factory=BoxReuseOptions)
    max_frames: int | None = None
    start: int = 0
    end: int | None = None
    pace: bool | None = None
    track: bool = True
    smoothing: str = "light"
    fps: float | None = None

    def __post_init__(self):
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")


@dataclass
class LiveResult:
    """One processed frame: the grabbed frame (``grabbed.frame``, ``grabbed.captured_s``), its prediction, the
    tracking of its people, the capture-to-result latency, and ``detect_reason`` (None: boxes from the previous
    frame's keypoints; else why the detector ran, see :data:`~sapiens2.video.live.DETECT_REASONS`)."""

    grabbed: Grabbed
    prediction: Prediction
    tracks: Any  # sapiens2.video.temporal.FrameTracks
    latency_s: float
    detect_reason: str | None

    @property
    def frame(self):
        return self.grabbed.frame


class LiveSession:
    """Run ``predictor`` (``predict(PredictInput) -> Prediction``, with ``tasks``) on ``source`` (a FrameSource,
    or what ``--source`` takes: ``0``, a URL, a file, a folder). Iterate :meth:`results`; :meth:`summary` after.
    ``clock``: seconds (tests pass a fake); ``open_capture``: replaces ``cv2.VideoCapture``."""

    def __init__(self, predictor, source, options: LiveOptions | None = None, *, tasks=None,
                 clock: Callable[[], float] = time.perf_counter, open_capture=None):
        from sapiens2.video.sources import FrameSource, open_source
        from sapiens2.video.temporal import TemporalProcessor

        self.predictor = predictor
        self.options = options or LiveOptions()
        self.tasks = list(tasks if tasks is not None else getattr(predictor, "tasks", ()))
        if not self.tasks:
            raise ValueError("no tasks: pass tasks= or a predictor with .tasks")
        self.source = source if isinstance(source, FrameSource) else open_source(
            source, fps=self.options.fps, open_capture=open_capture,
            max_pixels=getattr(predictor, "max_pixels", DEFAULT_MAX_PIXELS))
        self.clock = clock
        self.boxes = KeypointBoxes(self.options.boxes) if "pose" in self.tasks else None
        self.temporal = TemporalProcessor(track=self.options.track, smoothing=self.options.smoothing)
        self.stats = LiveStats()
        self.model_s = 0.0  # the predictor's own stage times (Prediction.timings), summed over frames
        self.grabber: LatestFrameGrabber | None = None
        self.stopped_by: str | None = None

    @property
    def pace_fps(self) -> float | None:
        pace = self.options.pace if self.options.pace is not None else not self.source.live
        return self.source.fps if pace else None

    def results(self) -> Iterator[LiveResult]:
        """Process the newest frame, again and again, until the source ends or ``max_frames``; closing the
        iterator (``break``, Ctrl-C) stops the grabber and releases the source."""
        opts = self.options
        frames = self.source.frames(start=opts.start, end=opts.end)
        self.grabber = grabber = LatestFrameGrabber(frames, pace_fps=self.pace_fps, clock=self.clock)
        self.stats.start(self.clock())
        self.stopped_by = "interrupted"
        try:
            while opts.max_frames is None or self.stats.processed < opts.max_frames:
                grabbed = grabber.take()
                if grabbed is None:
                    self.stopped_by = "end"
                    return
                yield self._process(grabbed)
            self.stopped_by = "max_frames"
        except GeneratorExit:  # the caller stopped iterating (run_live says why first: "quit")
            if self.stopped_by == "interrupted":
                self.stopped_by = "closed"
            raise
        finally:
            grabber.close()
            getattr(self.source, "close", lambda: None)()

    def _process(self, grabbed: Grabbed) -> LiveResult:
        frame = grabbed.frame
        boxes, reason = (None, None) if self.boxes is None else self.boxes.next_boxes(frame.rgb.shape[:2])
        prediction = self.predictor.predict(predict_input(frame.rgb, frame_index=frame.index, boxes=boxes))
        if getattr(prediction, "error", None) is not None:
            raise prediction.error
        prediction.frame_index = frame.index
        if self.boxes is not None:
            self.boxes.update(prediction.pose)
            if reason is None and prediction.pose is not None:
                prediction.pose.box_source = REUSED_BOXES
        tracks = self.temporal(prediction, frame.time_s)
        self.model_s += sum(prediction.timings.values()) if prediction.timings else 0.0
        latency = self.stats.record(grabbed.captured_s, self.clock())
        return LiveResult(grabbed, prediction, tracks, latency, reason)

    @property
    def frames_read(self) -> int:
        return self.grabber.read if self.grabber is not None else 0

    @property
    def frames_dropped(self) -> int:
        return self.grabber.dropped if self.grabber is not None else 0

    def summary(self) -> dict[str, Any]:
        """Counts and timings (valid during the run too; final once :meth:`results` has finished)."""
        out: dict[str, Any] = {"format": "sapiens2.live.summary", "source": self.source.name,
                               "tasks": self.tasks, "source_fps": self.source.fps, "paced": self.pace_fps is not None,
                               **self.stats.summary(read=self.frames_read, dropped=self.frames_dropped),
                               "model_ms_mean": round(1000.0 * self.model_s / max(self.stats.processed, 1), 2),
                               "stopped_by": self.stopped_by}
        if self.boxes is not None:
            out.update(redetect_every=self.options.boxes.redetect_every, detector_calls=self.boxes.detector_calls,
                       detections=dict(self.boxes.detections), reused_boxes=self.boxes.reused)
        out.update(people=self.temporal.people_frames, tracks=self.temporal.total_tracks,
                   issues=list(self.source.issues))
        return out


# ----------------------------------------------------------------------------------------------- the overlay
def live_overlay(result: LiveResult, tasks, stats: LiveStats) -> np.ndarray:
    """The picture shown and recorded: seg colours, then the tracked poses, then FPS and latency (RGB uint8);
    without seg or pose, the first task's picture."""
    import cv2

    from .outputs import render_task, seg_preview
    from sapiens2.visualization.seg import overlay_segmentation

    prediction, rgb = result.prediction, result.frame.rgb
    image = rgb
    if "seg" in tasks and prediction.seg is not None:
        image = overlay_segmentation(*seg_preview(rgb, prediction.seg.mask))
    if "pose" in tasks and prediction.pose is not None:
        tracks = result.tracks
        image = render_task(prediction, image, "pose", track_ids=tracks.track_ids, keypoints=tracks.keypoints)
    if image is rgb:
        image = render_task(prediction, rgb, tasks[0])
    image = np.ascontiguousarray(image).copy()
    text = f"{stats.rolling_fps:.1f} FPS  {result.latency_s * 1000:.0f} ms"
    scale = max(image.shape[0] / 720.0, 0.35)
    for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, (6, int(22 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                    max(1, int(width * scale * 1.5)), cv2.LINE_AA)
    return image


def display_available() -> bool:
    """Whether a window can be shown: macOS and Windows, or an X11 / Wayland display."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class WindowDisplay:
    """An OpenCV window; :meth:`show` returns False when the viewer asks to stop (``q``, Esc, window closed).
    A build of OpenCV without windows (``opencv-python-headless``) turns it off with a warning."""

    def __init__(self, title: str = "sapiens2 live"):
        self.title = title
        self.enabled = True
        self._opened = False

    def show(self, rgb: np.ndarray) -> bool:
        if not self.enabled:
            return True
        import cv2

        try:
            cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            self._opened = True
            key = cv2.waitKey(1) & 0xFF
            closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as exc:
            logger.warning("no window can be shown (%s); going on without one", str(exc).strip().splitlines()[-1])
            self.enabled = False
            return True
        return not (key in (ord("q"), ord("Q"), 27) or closed)

    def close(self) -> None:
        if self._opened:
            import cv2

            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


# ----------------------------------------------------------------------------------------------- the job
@dataclass
class LiveReport:
    """What a live run did (its summary dict, as ``B.live.json`` holds it) and the files it wrote."""

    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.summary.get("stopped_by") == "interrupted"

    def lines(self) -> list[str]:
        s = self.summary

        def ms(key):
            return "-" if s.get(key) is None else f"{s[key]:.1f} ms"

        out = [f"live {s['source']}: read {s['frames_read']} frame(s), processed {s['frames_processed']}, "
               f"dropped {s['frames_dropped']} ({s['fps']:.2f} FPS over {s['wall_s']:.1f} s)",
               f"latency capture -> result: p50 {ms('latency_ms_p50')}, p95 {ms('latency_ms_p95')}, "
               f"max {ms('latency_ms_max')}; the model's own time {ms('model_ms_mean')} per frame"]
        if "detector_calls" in s:
            reasons = ", ".join(f"{k} {v}" for k, v in s["detections"].items() if v)
            out.append(f"pose boxes: detector {s['detector_calls']} time(s) ({reasons or 'never'}), from the previous "
                       f"keypoints {s['reused_boxes']} time(s) (re-detect every {s['redetect_every']})")
        out.append(f"stopped by: {s['stopped_by']}; people-frames {s['people']}, tracks {s['tracks']}")
        out += [f"  issue: {issue}" for issue in s.get("issues", [])]
        out += [f"wrote {path}" for path in self.outputs]
        return out


def run_live(session: LiveSession, output_base: Path | None, *, record: Path | None = None,
             display: bool | WindowDisplay | None = None, progress: bool = False, model_name: str | None = None,
             pose_settings: dict | None = None, progress_every_s: float = 0.5, stream=None) -> LiveReport:
    """Run ``session`` to its end and write its files (see the module doc). ``display``: True / False / None
    (= when a display exists) or a display object with ``show(rgb) -> keep going`` and ``close()``. Ctrl-C stops
    and keeps what was processed (the JSON Lines, the recording and the summary are published)."""
    tasks = session.tasks
    if display is None:
        display = display_available()
    window = WindowDisplay() if display is True else (display or None)
    stream = stream if stream is not None else sys.stderr
    outputs: list[Path] = []
    last_progress = None
    with ExitStack() as stack:
        if window is not None:
            stack.callback(window.close)
        lines = None
        suffix = video_jsonl_suffix(tasks)
        if output_base is not None and suffix is not None:
            path = with_suffix(output_base, suffix)
            lines = stack.enter_context(atomic_open(path, "w"))
            outputs.append(path)
        video = None
        if record is not None:
            video = stack.enter_context(VideoWriter(record, session.source.fps))
        previous_seq = None
        results = session.results()
        stack.callback(results.close)
        try:
            for result in results:
                if lines is not None:
                    if session.stats.processed == 1:  # the size of a camera's frames is known from the first
                        lines.write(json_line(_header(session, result.frame.rgb.shape[:2], model_name, pose_settings)))
                    lines.write(json_line(_frame_record(result, session)))
                need_picture = video is not None or window is not None
                picture = live_overlay(result, tasks, session.stats) if need_picture else None
                if video is not None:  # hold this result for the frames dropped until the next one
                    repeats = 1 if previous_seq is None else result.grabbed.seq - previous_seq
                    for _ in range(max(1, min(repeats, int(10 * session.source.fps) + 1))):
                        video.write(picture)
                    previous_seq = result.grabbed.seq
                if window is not None and not window.show(picture):
                    session.stopped_by = "quit"
                    break
                now = session.clock()
                if progress and (last_progress is None or now - last_progress >= progress_every_s):
                    last_progress = now
                    stream.write("\r" + progress_text(session.stats, read=session.frames_read,
                                                      dropped=session.frames_dropped, latency_s=result.latency_s))
                    stream.flush()
        except KeyboardInterrupt:
            results.close()  # (a no-op when the interrupt came from inside the session)
            session.stopped_by = "interrupted"
            logger.warning("interrupted after %d frame(s); writing what was processed", session.stats.processed)
        finally:
            results.close()  # the grabber is stopped and the source released before the files are published
            if progress and last_progress is not None:
                stream.write("\n")
        if lines is not None and session.stats.processed == 0:  # a header-only file says nothing was processed
            lines.write(json_line(_header(session, (session.source.height, session.source.width), model_name,
                                           pose_settings)))
        if video is not None and video.frames_written:
            outputs.append(video.path)
    summary = session.summary()
    if output_base is not None:
        outputs.append(write_json(with_suffix(output_base, LIVE_SUMMARY_SUFFIX), summary))
    return LiveReport(summary, outputs)


def _header(session: LiveSession, image_hw, model_name, pose_settings) -> dict[str, Any]:
    fps = session.source.fps
    header = pose_header(model=model_name, fps=fps, kind="video", image_size=image_hw,
                         settings=pose_settings or getattr(session.predictor, "pose_settings", None) or {})
    if "pose" not in session.tasks:
        header = {"format": "sapiens2.frames.video", "format_version": header["format_version"], "fps": fps,
                  "image_size": header["image_size"]}
    preset = session.temporal.preset
    header.update(live=True, source_fps=fps, start_frame=session.options.start, end_frame=session.options.end,
                  tracking=session.temporal.track, smoothing=preset.describe() if preset is not None else None,
                  redetect_every=session.options.boxes.redetect_every if session.boxes is not None else None)
    return header


def _frame_record(result: LiveResult, session: LiveSession) -> dict[str, Any]:
    frame = result.frame
    record = frame_pose_record(result.prediction.pose, frame_index=frame.index, fps=session.source.fps,
                               time_s=frame.time_s, tracks=result.tracks)
    record["latency_ms"] = round(result.latency_s * 1000.0, 3)
    if session.boxes is not None:
        record["detect_reason"] = result.detect_reason
    return record


__all__ = ["LIVE_SUMMARY_SUFFIX", "LiveOptions", "LiveReport", "LiveResult", "LiveSession", "REUSED_BOXES",
           "WindowDisplay", "display_available", "live_overlay", "run_live"]
