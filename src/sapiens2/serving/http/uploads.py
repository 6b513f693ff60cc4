"""Reading an upload safely: size-capped body, multipart or raw, checked image header, decoded image.

Every problem becomes an :class:`UploadError` with the HTTP status and a reason naming it: empty (400), over the
upload limit or the pixel limit (413), not an image (415), truncated or corrupt (422). The pixel limit is checked
on the header before decoding (PNG, JPEG, GIF, BMP, WebP), so a small file that would decode into gigabytes
(a "decompression bomb") costs nothing; other formats are checked after decoding.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from sapiens2.errors import Sapiens2Error


class UploadError(Sapiens2Error, ValueError):
    """A request the server will not process; ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Upload:
    """The uploaded file's bytes, its name and content type, and the form fields beside it."""

    data: bytes
    filename: str = "upload"
    content_type: str = ""
    fields: dict[str, str] = field(default_factory=dict)


async def read_body(chunks: AsyncIterator[bytes], limit: int, declared: str | None) -> bytes:
    """The request body, refused as soon as it is known to exceed ``limit`` bytes (from Content-Length before
    reading anything, else while streaming), so an oversized upload is never held in memory."""
    too_big = UploadError(413, f"upload exceeds the limit of {limit / 2**20:g} MB (--max-upload-mb)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


async def parse_upload(body: bytes, headers: Mapping[str, str], *, file_field: str = "file") -> Upload:
    """A multipart/form-data body (the file in ``file_field``, or the only file part) or a raw body."""
    content_type = headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return Upload(body, content_type=content_type.split(";")[0].strip())
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise UploadError(400, f"unreadable multipart body: {exc.message}") from None
    files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    chosen = next((v for k, v in files if k == file_field), files[0][1] if len(files) == 1 else None)
    if chosen is None:
        raise UploadError(400, f"no file in the form: send the image as the {file_field!r} field")
    data = await chosen.read()
    await form.close()
    return Upload(data, filename=chosen.filename or "upload", content_type=chosen.content_type or "", fields=fields)


def decode_upload(upload: Upload, *, max_pixels: int):
    """The upload as a :class:`~sapiens2.io.LoadedImage`, or an :class:`UploadError` naming the problem."""
    from sapiens2.io import ImageReadError, ImageTooLargeError, decode_image

    data, name = upload.data, upload.filename
    if not data:
        raise UploadError(400, "the upload is empty (0 bytes): send an image file")
    kind = upload.content_type.lower()
    if kind and not (kind.startswith("image/") or kind in ("application/octet-stream", "binary/octet-stream")):
        raise UploadError(415, f"content type {upload.content_type!r} is not an image; send image/jpeg, image/png, ...")
    try:  # the pixel limit is checked from the header, before decoding (sapiens2.io.imagesize)
        image = decode_image(data, name=name, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        raise UploadError(413, f"{name}: {exc.reason}") from None
    except ImageReadError as exc:
        status = 415 if exc.reason.startswith("not an image") else 422
        raise UploadError(status, f"{name}: {exc.reason}") from None
    except Exception as exc:  # a decoder crash is this upload's problem, not the server's
        raise UploadError(422, f"{name}: the image could not be decoded ({type(exc).__name__})") from None
    return image


def parse_boxes(text: str | None) -> np.ndarray | None:
    """``boxes=`` ``[[x1, y1, x2, y2(, score)], ...]`` (JSON) -> (N, 4|5) float32; None when not given."""
    if text is None or not text.strip():
        return None
    try:
        boxes = np.asarray(json.loads(text), dtype=np.float32)
    except (ValueError, TypeError):
        raise UploadError(400, f"boxes must be JSON [[x1, y1, x2, y2(, score)], ...], got {text[:80]!r}") from None
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or not np.isfinite(boxes).all():
        raise UploadError(400, f"boxes must be N rows of 4 or 5 finite numbers, got shape {list(boxes.shape)}")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise UploadError(400, "each box must have x2 > x1 and y2 > y1")
    return boxes


def parse_task_list(text: str | None, served: list[str]) -> list[str]:
    """``tasks=`` (comma-separated; default: every served task) -> served tasks in canonical order."""
    from sapiens2.models.heads.task_table import resolve_tasks

    if text is None or not text.strip():
        return list(served)
    try:  # the same names and aliases as --task (one table)
        wanted = resolve_tasks(text)
    except Sapiens2Error as exc:
        raise UploadError(400, str(exc)) from None
    missing = [t for t in wanted if t not in served]
    if missing:
        raise UploadError(400, f"task(s) {', '.join(missing)} are not served here (served: {', '.join(served)})")
    return [t for t in served if t in wanted]


def check_video_work(clip, name: str, every: int, max_frames: int, max_video_pixels: int) -> int:
    """The frames a clip will be processed for, or 413 when they would hold more than ``max_video_pixels`` pixels
    in all (0: no limit). Frame size and count are the container's, read before any frame is decoded; a count it
    does not report counts as ``max_frames``, a size it does not report is left to the frame checks downstream."""
    import math

    import cv2

    from sapiens2.io.video import container_frame_count, container_frame_size

    capture = cv2.VideoCapture(str(clip))
    try:
        size, count = container_frame_size(capture), container_frame_count(capture)
    finally:
        capture.release()
    frames = min(int(max_frames), math.ceil(count / max(1, int(every)))) if count else int(max_frames)
    if not max_video_pixels or size is None:
        return frames
    total = size[0] * size[1] * frames
    if total > max_video_pixels:
        raise UploadError(413, f"{name}: {frames} frames of {size[0]}x{size[1]} are {total / 1e6:.0f} megapixels "
                               f"to process, over the limit of {max_video_pixels / 1e6:.0f} (--max-video-pixels): "
                               "send a shorter or smaller clip, or fewer frames (max_frames=, every=)")
    return frames

__all__ = ["Upload", "UploadError", "check_video_work", "decode_upload", "parse_boxes", "parse_task_list",
           "parse_upload", "read_body"]
