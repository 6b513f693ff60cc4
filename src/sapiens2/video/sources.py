"""Frame sources: video files, image-sequence folders, cameras and network streams, read one frame at a time.

Every source yields :class:`Frame` objects (RGB uint8) and never holds more than the frame being read. Problems
that do not stop the source (a frame that does not decode, a file that ends before the frame count its container
announced, a camera that stops answering) are logged and kept in ``source.issues`` so that callers can report
them; the frames before and after are still delivered.

What ``--source`` / an input path means (:func:`parse_source`):

=================================== ========================================================================
``0``, ``1`` ... (digits only)      a camera index, opened with ``cv2.VideoCapture(index)``
``rtsp://``, ``http(s)://``, ...    a network stream (any URL OpenCV's FFmpeg back end reads)
a folder                            an image sequence: its image files in natural order (``f2`` before ``f10``)
a file                              a video file (any container/codec OpenCV's FFmpeg reads)
=================================== ========================================================================

``start``/``end`` select frames by *source frame index* (end exclusive); :func:`parse_position` turns the CLI's
text (seconds by default, ``"1:30"``, or ``"120f"`` for frame numbers) into indices.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from sapiens2.io import VideoReadError, input_kind
from sapiens2.io.errors import ImageTooLargeError, VideoTooLargeError
from sapiens2.io.images import ImageReadError, read_image
from sapiens2.io.imagesize import DEFAULT_MAX_PIXELS
from sapiens2.io.video import check_frame_size, container_frame_count

logger = logging.getLogger(__name__)

#: Frame rate assumed when a container, camera or image folder does not give one.
FALLBACK_FPS = 30.0
#: URL schemes treated as network streams.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "mms"})
#: Reads in a row that may fail before a file is declared finished (FFmpeg skips a damaged packet on the next
#: read) or a live source is declared disconnected.
MAX_CONSECUTIVE_FAILURES = 5

SourceKind = Literal["file", "folder", "camera", "url"]


class CaptureLike(Protocol):
    """The subset of ``cv2.VideoCapture`` the sources use (tests pass fakes)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, Any]: ...
    def grab(self) -> bool: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[Any], CaptureLike]


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``index``: its position in the source (0-based, counting skipped frames);
    ``time_s``: ``index / fps`` for files and folders, seconds since the first frame for live sources."""

    index: int
    time_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class SourceSpec:
    """What a ``--source`` text names: ``kind`` and ``target`` (int camera index, URL text or Path)."""

    kind: SourceKind
    target: int | str | Path

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "url")

    @property
    def display(self) -> str:
        """A printable name (credentials removed from URLs)."""
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "url":
            return redact_url(str(self.target))
        return str(self.target)

    @property
    def stem(self) -> str:
        """A file-name-safe stem for the outputs of a live source: ``camera0``, ``stream_<host>_<path>``."""
        if self.kind == "camera":
            return f"camera{self.target}"
        if self.kind == "url":
            parts = urlsplit(str(self.target))
            text = f"{parts.hostname or 'stream'}_{parts.path.strip('/')}" if parts.path.strip("/") else (
                parts.hostname or "stream")
            return "stream_" + re.sub(r"[^A-Za-z0-9-]+", "_", text).strip("_")[:80]  # no dots: no suffix
        return Path(self.target).stem


def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://***@host/x`` (for logs and reports)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = "***@" + parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_source(text: str | int | os.PathLike[str]) -> SourceSpec:
    """Classify a source (see the module doc). Raises ``ValueError`` for a URL with an unknown scheme or a
    path that does not exist."""
    if isinstance(text, int):
        return SourceSpec("camera", int(text))
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    text = str(text).strip()
    if re.fullmatch(r"\d{1,3}", text):
        return SourceSpec("camera", int(text))
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return parse_source(urlsplit(text).path)
        if scheme not in STREAM_SCHEMES:
            raise ValueError(f"unsupported stream URL scheme {scheme!r} in {redact_url(text)!r} "
                             f"(supported: {', '.join(sorted(STREAM_SCHEMES))})")
        if not urlsplit(text).hostname:
            raise ValueError(f"stream URL {redact_url(text)!r} has no host")
        return SourceSpec("url", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec("folder", path)
    if path.exists():
        return SourceSpec("file", path)
    raise ValueError(f"{text!r} is neither an existing file or folder, a camera index nor a stream URL")


_POSITION = re.compile(r"^(?:(?P<frames>\d+)f|(?:(?P<h>\d+):)?(?:(?P<m>\d+):)?(?P<s>\d+(?:\.\d*)?|\.\d+)s?)$")


def parse_position(text: str | None, fps: float) -> int | None:
    """``--start``/``--end`` text -> a source frame index (None stays None).

    ``"12.5"`` / ``"12.5s"`` are seconds, ``"1:30"`` / ``"0:01:30.5"`` are [h:]m:s, ``"300f"`` is frame 300.
    Seconds become ``round(seconds * fps)``.
    """
    if text is None:
        return None
    match = _POSITION.match(str(text).strip().lower())
    if not match:
        raise ValueError(f"cannot read the position {text!r}: use seconds (12.5), m:s (1:30) or a frame "
                         f"number with f (300f)")
    if match.group("frames") is not None:
        return int(match.group("frames"))
    hours, minutes = match.group("h"), match.group("m")
    if hours is not None and minutes is None:  # "1:30" matched h=1, s=30: it means m:s
        hours, minutes = None, hours
    seconds = float(match.group("s")) + 60.0 * int(minutes or 0) + 3600.0 * int(hours or 0)
    return int(round(seconds * fps))


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FrameSource:
    """Base of the sources: ``fps``, ``width``/``height`` (of the decoded frames), ``frame_count`` (0 when
    unknown, always for live sources), ``live``, ``name`` and ``issues``.

    :meth:`frames` yields every ``step``-th frame with ``start <= index < end``, at most ``max_frames``.
    """

    live: bool = False

    def __init__(self, name: str):
        self.name = name
        self.fps = FALLBACK_FPS
        self.fps_reported = False
        self.width = self.height = 0
        self.frame_count = 0
        self.issues: list[str] = []

    def _issue(self, message: str) -> None:
        logger.warning("%s: %s", self.name, message)
        self.issues.append(message)

    def frames(self, *, step: int = 1, start: int = 0, end: int | None = None,
               max_frames: int | None = None) -> Iterator[Frame]:
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        return self._frames(step, start, end, max_frames)

    def _frames(self, step: int, start: int, end: int | None, max_frames: int | None) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {self.width}x{self.height}, fps={self.fps:g}, "
                f"frames={self.frame_count or 'unknown'})")


def _valid_bgr(frame: Any) -> bool:
    return isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] in (3, 4) and frame.size > 0 \
        and frame.dtype == np.uint8


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    code = cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(frame, code)


class CaptureSource(FrameSource):
    """A video file, camera or stream read through an OpenCV ``VideoCapture`` (or a fake with its methods).

    ``open_capture(target)`` makes a new capture; files are re-opened for every :meth:`frames` call, live sources
    are opened once and read until they stop. Opening checks that the first frame decodes (for files; live
    sources check on the first read). A failed read in the middle of a file is retried
    (``MAX_CONSECUTIVE_FAILURES`` times, counting each as one lost frame) before the file is taken as ended;
    ending before the container's frame count is reported as an issue.
    """

    def __init__(self, spec: SourceSpec, *, open_capture: CaptureFactory | None = None,
                 fps: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        super().__init__(spec.display)
        self.spec = spec
        self.live = spec.live
        self._open_capture = open_capture or cv2.VideoCapture
        self._live_capture: CaptureLike | None = None
        self._first: np.ndarray | None = None
        capture = self._open()
        try:
            check_frame_size(capture, self.name, max_pixels)  # from the container, before decoding a frame
            reported = capture.get(cv2.CAP_PROP_FPS)
            self.fps_reported = bool(math.isfinite(reported) and 0 < reported < 1000)
            self.fps = float(fps) if fps else (float(reported) if self.fps_reported else FALLBACK_FPS)
            if not self.live:
                self.frame_count = container_frame_count(capture)
                ok, frame = capture.read()
                if not ok or not _valid_bgr(frame):
                    raise VideoReadError(self.name, "video has no decodable frames")
                self.height, self.width = frame.shape[:2]
            else:
                width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
                self.width = int(width) if math.isfinite(width) and width > 0 else 0
                self.height = int(height) if math.isfinite(height) and height > 0 else 0
        except BaseException:
            capture.release()
            raise
        if self.live:
            self._live_capture = capture  # a camera or stream cannot be re-opened at its start: keep it
        else:
            capture.release()

    def _open(self) -> CaptureLike:
        if self.spec.kind == "file":
            path = Path(self.spec.target)
            if not path.exists():
                raise VideoReadError(path, "file does not exist")
            if path.stat().st_size == 0:
                raise VideoReadError(path, "file is empty (0 bytes)")
            target: Any = str(path)
        else:
            target = self.spec.target
        capture = self._open_capture(target)
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            what = {"file": "OpenCV cannot open it (not a video, or an unsupported container/codec)",
                    "camera": "the camera cannot be opened (no such device, or it is busy)",
                    "url": "the stream cannot be opened (unreachable, refused, or an unsupported protocol)"}
            raise VideoReadError(self.name, what.get(self.spec.kind, "cannot be opened"))
        return capture

    def close(self) -> None:
        if self._live_capture is not None:
            self._live_capture.release()
            self._live_capture = None

    def _frames(self, step: int, start: int, end: int | None, max_frames: int | None) -> Iterator[Frame]:
        if self.live:
            if self._live_capture is None:
                raise VideoReadError(self.name, "the live source was closed (it can be read once)")
            capture = self._live_capture
        else:
            capture = self._open()
        clock_start: float | None = None
        index = yielded = 0
        lost: list[int] = []  # wanted frames whose read failed; reported once a later read shows the source goes on
        failures = 0
        try:
            while (max_frames is None or yielded < max_frames) and (end is None or index < end):
                wanted = index >= start and (index - start) % step == 0
                if wanted:
                    ok, bgr = capture.read()
                    ok = ok and _valid_bgr(bgr)
                else:
                    ok, bgr = capture.grab(), None  # skip without converting to colour
                if not ok:
                    failures += 1
                    if failures > MAX_CONSECUTIVE_FAILURES or (not self.live and self._past_end(capture, index)):
                        self._report_end(index - failures + 1)
                        return
                    if wanted:
                        lost.append(index)
                    if self.live:
                        time.sleep(0.01 * failures)  # give a stalled stream a moment
                    index += 1
                    continue
                failures = 0
                for missing in lost:
                    self._issue(f"frame {missing} could not be {'read' if self.live else 'decoded'}; skipped")
                lost.clear()
                if wanted:
                    if self.height and (bgr.shape[0], bgr.shape[1]) != (self.height, self.width) and not self.live:
                        self._issue(f"frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, not "
                                    f"{self.width}x{self.height}; skipped")
                    else:
                        if not self.height:
                            self.height, self.width = bgr.shape[:2]
                        now = time.monotonic()
                        clock_start = now if clock_start is None else clock_start
                        when = now - clock_start if self.live else index / self.fps
                        yield Frame(index, when, _to_rgb(bgr))
                        yielded += 1
                index += 1
        finally:
            if self.live:
                self.close()
            else:
                capture.release()

    def _past_end(self, capture: CaptureLike, index: int) -> bool:
        """Whether a failed read of a file is its normal end (no frame count known, or all frames read)."""
        return self.frame_count == 0 or index >= self.frame_count

    def _report_end(self, index: int) -> None:
        if self.live:
            self._issue(f"the stream stopped delivering frames after frame {index - 1}")
        elif self.frame_count and index < self.frame_count:
            self._issue(f"the video ended early: frame {index} of the {self.frame_count} its container announces "
                        f"could not be read; frames after it are missing")


class ImageFolderSource(FrameSource):
    """The image files of a folder (not its sub-folders) in natural order, as frames at ``fps`` (default 30).
    An unreadable image or one of another size than the first is reported and skipped."""

    def __init__(self, folder: str | os.PathLike[str], *, fps: float | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS):
        folder = Path(folder)
        self.max_pixels = max_pixels
        super().__init__(str(folder))
        if not folder.is_dir():
            raise VideoReadError(folder, "is not a folder")
        self.paths = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                             and input_kind(p) == "image"), key=_natural_key)
        if not self.paths:
            raise VideoReadError(folder, "the folder has no image files")
        self.fps_reported = fps is not None
        self.fps = float(fps) if fps else FALLBACK_FPS
        self.frame_count = len(self.paths)
        first = None
        for path in self.paths:
            try:
                first = read_image(path, max_pixels=max_pixels)
                break
            except ImageTooLargeError as exc:
                raise VideoTooLargeError(folder, exc.width, exc.height, exc.limit) from exc
            except ImageReadError:
                continue
        if first is None:
            raise VideoReadError(folder, "none of its images can be read")
        self.height, self.width = first.shape[:2]

    def _frames(self, step: int, start: int, end: int | None, max_frames: int | None) -> Iterator[Frame]:
        stop = len(self.paths) if end is None else min(end, len(self.paths))
        yielded = 0
        for index in range(start, stop, step):
            if max_frames is not None and yielded >= max_frames:
                return
            try:
                rgb = read_image(self.paths[index], max_pixels=self.max_pixels)
            except ImageReadError as exc:
                self._issue(f"frame {index} ({self.paths[index].name}) skipped: {exc.reason}")
                continue
            if rgb.shape[:2] != (self.height, self.width):
                self._issue(f"frame {index} ({self.paths[index].name}) is {rgb.shape[1]}x{rgb.shape[0]}, not "
                            f"{self.width}x{self.height}; skipped")
                continue
            yield Frame(index, index / self.fps, rgb)
            yielded += 1


def open_source(source: str | int | os.PathLike[str] | SourceSpec, *, fps: float | None = None,
                open_capture: CaptureFactory | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> FrameSource:
    """Open any source (see the module doc). ``fps`` overrides the rate (image folders: default 30).
    ``open_capture`` replaces ``cv2.VideoCapture`` (tests use fakes). ``max_pixels``: refuse frames with more
    pixels (size from the container, or the folder's first image header; 0 = no limit). Raises
    :class:`VideoReadError` (:class:`VideoTooLargeError` for the limit)."""
    spec = source if isinstance(source, SourceSpec) else parse_source(source)
    if spec.kind == "folder":
        return ImageFolderSource(spec.target, fps=fps, max_pixels=max_pixels)
    return CaptureSource(spec, open_capture=open_capture, fps=fps, max_pixels=max_pixels)


__all__ = ["CaptureLike", "CaptureSource", "FALLBACK_FPS", "Frame", "FrameSource", "ImageFolderSource",
           "SourceSpec", "open_source", "parse_position", "parse_source", "redact_url"]
