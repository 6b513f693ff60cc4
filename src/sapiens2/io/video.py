"""Video files with OpenCV: which extensions are videos, the frame-size check made before decoding, and
:class:`VideoWriter` (RGB uint8 frames in). Reading lives in :mod:`sapiens2.video.sources` (files, image folders,
cameras, streams).

Writing goes to a hidden temporary file in the destination folder which is renamed into place on
:meth:`VideoWriter.close`, so an interrupted run never leaves a half-written video under the final name.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np

from .errors import OutputWriteError, VideoTooLargeError

logger = logging.getLogger(__name__)

#: File extensions (lower case, with dot) treated as videos when scanning inputs.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
    ".ts", ".mts", ".m2ts", ".3gp", ".ogv",
})

TEMP_TAG = ".s2tmp"  # marks our temporary files (see writers.remove_stale_temp_files)

#: Codecs tried in order for the requested container: H.264 (``avc1``, what every browser plays; OpenCV's pip
#: wheels usually ship no H.264 encoder), then MPEG-4 Part 2 (``mp4v``, always present, but browsers do not play
#: it). Motion-JPEG in ``.avi`` is the last resort.
PREFERRED_FOURCCS = ("avc1", "mp4v")
_BROWSER_CODECS = frozenset({"avc1"})
_reported_fallbacks: set[tuple[str, str]] = set()  # (requested, used): each said once per process
_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Hide what FFmpeg / OpenCV print on the process's stderr while an encoder is tried: a missing H.264 encoder
    is expected and reported once by us, in one line, not as native error lines. Only around the open call."""
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to hide
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def container_frame_size(capture) -> tuple[int, int] | None:
    """(width, height) of the frames as the container reports them (``CAP_PROP_FRAME_WIDTH/HEIGHT``, known before
    any frame is decoded), or None where it does not report them."""
    width, height = capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0:
        return int(width), int(height)
    return None


def container_frame_count(capture) -> int:
    """The frame count the container reports (``CAP_PROP_FRAME_COUNT``), 0 where it does not report one."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if math.isfinite(count) and count > 0 else 0


def check_frame_size(capture, name: str, max_pixels: int | None) -> None:
    """Refuse a video whose frames, as the container reports them (:func:`container_frame_size`), have more than
    ``max_pixels`` pixels (0 / None: no limit). A size the container does not report is not checked here; the
    frames are then checked by the image limit downstream."""
    if not max_pixels:
        return
    size = container_frame_size(capture)
    if size is not None and size[0] * size[1] > max_pixels:
        raise VideoTooLargeError(name, size[0], size[1], int(max_pixels))


def _report_fallback(requested: str, used: str) -> None:
    if (requested, used) in _reported_fallbacks:
        return
    _reported_fallbacks.add((requested, used))
    note = "" if used in _BROWSER_CODECS else (
        "; web browsers do not play it: re-encode with `ffmpeg -i X.mp4 -c:v libx264 -pix_fmt yuv420p Y.mp4`, or "
        "use an OpenCV built with an H.264 encoder")
    logger.warning("videos: no %s encoder in this OpenCV build, writing %s instead%s", requested, used, note)


class VideoWriter:
    """Write RGB uint8 frames to a video file atomically.

    The container follows the file extension (normally ``.mp4``). Codecs are tried in order: ``fourcc`` if
    given, then :data:`PREFERRED_FOURCCS`: ``avc1`` (H.264, which browsers play; only where OpenCV's FFmpeg has an
    encoder), then ``mp4v`` (MPEG-4 Part 2, always present, not played by browsers: said once per process in a
    warning). If no codec opens for that container, the writer falls back to Motion-JPEG in ``.avi``, logs a
    warning, and ``path`` becomes the ``.avi`` name; ``fourcc`` is the codec used. Odd frame sizes are
    padded by one replicated row/column, as MPEG encoders need even sizes. The frame size is fixed by the
    first frame (or ``frame_size=(width, height)``); a frame of another size raises ``ValueError``.

    Use as a context manager: on an exception the temporary file is deleted and nothing is published.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, *, fourcc: str | None = None,
                 frame_size: tuple[int, int] | None = None):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.fourcc = fourcc
        self.frame_size = frame_size
        self.frames_written = 0
        self._writer: cv2.VideoWriter | None = None
        self._temp: Path | None = None
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(self.path.parent, f"cannot create output directory ({exc.strerror or exc})") from exc
        if not os.access(self.path.parent, os.W_OK):
            raise OutputWriteError(self.path.parent, "output directory is not writable")

    def _try_open(self, final: Path, fourcc: str, size: tuple[int, int]) -> bool:
        temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}{TEMP_TAG}{final.suffix}")
        with _native_stderr_silenced():
            writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
        if writer.isOpened():
            self._writer, self._temp, self.path = writer, temp, final
            return True
        writer.release()
        temp.unlink(missing_ok=True)
        return False

    def _open(self, size: tuple[int, int]) -> None:
        requested = self.fourcc or PREFERRED_FOURCCS[0]
        tried = list(dict.fromkeys([requested, *PREFERRED_FOURCCS]))
        for fourcc in tried:
            if self._try_open(self.path, fourcc, size):
                self.fourcc = fourcc
                if fourcc != requested:
                    _report_fallback(requested, fourcc)
                return
        fallback = self.path.with_suffix(".avi")
        if self._try_open(fallback, "MJPG", size):
            logger.warning("video %s: no %s encoder for %s; writing Motion-JPEG to %s instead",
                           self.path, "/".join(tried), self.path.suffix, fallback)
            self.fourcc = "MJPG"
            return
        raise OutputWriteError(self.path, "OpenCV could not open any video encoder (tried "
                               f"{', '.join(tried)}, MJPG/.avi)")

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3); a grayscale (H, W) frame is accepted too."""
        if self._closed:
            raise ValueError(f"video writer for {self.path} is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"video frames must be uint8, got {frame.dtype}")
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"video frames must be (H, W, 3) RGB, got shape {frame.shape}")
        height, width = frame.shape[:2]
        if self.frame_size is None:
            self.frame_size = (width, height)
        if (width, height) != tuple(self.frame_size):
            raise ValueError(f"frame size {width}x{height} differs from the video's "
                             f"{self.frame_size[0]}x{self.frame_size[1]}")
        pad_h, pad_w = height % 2, width % 2
        if self._writer is None:
            self._open((width + pad_w, height + pad_h))
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if pad_h or pad_w:
            bgr = cv2.copyMakeBorder(bgr, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        self._writer.write(bgr)
        self.frames_written += 1

    def close(self) -> Path | None:
        """Finish the file and move it to ``path``; returns that path (None if no frame was written)."""
        if self._closed:
            return self.path if self.frames_written else None
        self._closed = True
        if self._writer is None:
            logger.warning("video %s: no frames were written; no file created", self.path)
            return None
        self._writer.release()
        if not self._temp.exists() or self._temp.stat().st_size == 0:
            self._temp.unlink(missing_ok=True)
            raise OutputWriteError(self.path, "the encoder produced no data")
        try:
            os.replace(self._temp, self.path)
        except OSError as exc:
            self._temp.unlink(missing_ok=True)
            raise OutputWriteError(self.path, exc.strerror or str(exc)) from exc
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; nothing is published."""
        self._closed = True
        if self._writer is not None:
            self._writer.release()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
