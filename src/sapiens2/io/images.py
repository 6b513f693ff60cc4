"""Reading any image OpenCV can decode into RGB uint8 (H, W, 3), in display orientation.

Conversions: grayscale -> RGB by repetition; 16-bit -> 8-bit by ``round(v / 257)`` (65535 -> 255);
floating point (e.g. 32-bit TIFF) is taken as [0, 1] and clipped; images with alpha are composited over
``background`` (default white, as a viewer shows them) and the alpha is kept, as uint8, on
:class:`LoadedImage`. EXIF orientation (JPEG, PNG, WebP) is applied to both colour and alpha.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageReadError
from .imagesize import DEFAULT_MAX_PIXELS, check_pixels, header_size
from .metadata import apply_orientation, exif_orientation, jpeg_is_complete

#: File extensions (lower case, with dot) treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2",
    ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".ras", ".sr", ".exr", ".hdr", ".pic",
})

#: Default colour (RGB) that transparent pixels are composited over.
DEFAULT_BACKGROUND = (255, 255, 255)

_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image. ``rgb`` is always (H, W, 3) uint8; ``alpha`` is (H, W) uint8 or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    path: str
    orientation: int = 1  # EXIF orientation that was applied (1 = none)
    source_dtype: str = "uint8"  # sample type in the file: uint8, uint16, float32, ...
    source_channels: int = 3  # channels in the file: 1 gray, 2 gray+alpha, 3 colour, 4 colour+alpha

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _format_name(data: bytes) -> str | None:
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"1234567":
        return "PNM"
    return None


def _to_uint8(samples: np.ndarray, name: str) -> np.ndarray:
    if samples.dtype == np.uint8:
        return samples
    if samples.dtype == np.uint16:
        # round(v * 255 / 65535) == round(v / 257), in integers: exact and fast.
        return ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if samples.dtype in (np.float16, np.float32, np.float64):
        clean = np.nan_to_num(samples.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(clean, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageReadError(name, f"unsupported sample type {samples.dtype} (expected 8/16-bit or float)")


_COMPOSITE_ROWS_PIXELS = 256 * 1024  # pixels per band of the float compositing: a few MB of temporaries


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    bg = np.asarray(background, dtype=np.float32)
    out = np.empty(rgb.shape, np.uint8)
    step = max(1, _COMPOSITE_ROWS_PIXELS // max(1, rgb.shape[1]))
    for top in range(0, rgb.shape[0], step):  # band by band: no full-size float32 copies
        weight = alpha[top:top + step].astype(np.float32)[..., None] / 255.0
        out[top:top + step] = np.rint(rgb[top:top + step].astype(np.float32) * weight + bg * (1.0 - weight))
    return out


def decode_image(data: bytes, *, name: str = "<bytes>",
                 background: tuple[int, int, int] = DEFAULT_BACKGROUND,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode encoded image bytes (any format OpenCV reads). ``name`` is used in error messages.

    ``max_pixels``: refuse images with more pixels (width x height), read from the header before decoding
    (:mod:`sapiens2.io.imagesize`); 0 or None for no limit. Raises :class:`ImageTooLargeError` for those and
    :class:`ImageReadError` for empty, truncated, corrupt or non-image data.
    """
    if len(data) == 0:
        raise ImageReadError(name, "file is empty (0 bytes)")
    declared = header_size(data, name)
    if declared is not None:
        check_pixels(name, declared[0], declared[1], max_pixels)
    kind = _format_name(data)
    if kind == "JPEG" and not jpeg_is_complete(data):
        raise ImageReadError(name, "truncated or corrupt JPEG (image data does not reach the end marker)")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(name, f"OpenCV failed to decode it ({str(exc).strip().splitlines()[-1]})") from exc
    if decoded is None or decoded.size == 0:
        if kind is None:
            raise ImageReadError(name, f"not an image (unrecognised content starting {data[:8]!r})")
        raise ImageReadError(name, f"truncated or corrupt {kind} data")
    if declared is None:  # a format whose header is not parsed: checked now, before any further copy
        check_pixels(name, decoded.shape[1], decoded.shape[0], max_pixels)

    source_dtype = str(decoded.dtype)
    samples = _to_uint8(decoded, name)
    if samples.ndim == 2:
        samples = samples[..., None]
    channels = samples.shape[2]
    alpha = None
    if channels == 1:
        rgb = np.repeat(samples, 3, axis=2)
    elif channels == 2:
        rgb, alpha = np.repeat(samples[..., :1], 3, axis=2), samples[..., 1]
    elif channels == 3:
        # in place when the decoder's buffer is ours: no second full-size copy
        rgb = cv2.cvtColor(samples, cv2.COLOR_BGR2RGB, dst=samples if samples is decoded else None)
    elif channels == 4:
        rgb, alpha = cv2.cvtColor(samples[..., :3], cv2.COLOR_BGR2RGB), np.ascontiguousarray(samples[..., 3])
    else:
        raise ImageReadError(name, f"unsupported channel count {channels}")
    if alpha is not None:
        rgb = _composite(rgb, alpha, background)

    orientation = exif_orientation(data)
    rgb = apply_orientation(rgb, orientation)
    if alpha is not None:
        alpha = apply_orientation(alpha, orientation)
    return LoadedImage(rgb=np.ascontiguousarray(rgb), alpha=alpha, path=name, orientation=orientation,
                       source_dtype=source_dtype, source_channels=channels)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(path, "file does not exist")
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from exc


def load_image(path: str | os.PathLike[str], *, background: tuple[int, int, int] = DEFAULT_BACKGROUND,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage` (RGB uint8 + optional alpha + facts). ``max_pixels``:
    see :func:`decode_image` (default 100 megapixels, 0 = no limit)."""
    path = Path(path)
    return decode_image(_read_bytes(path), name=str(path), background=background, max_pixels=max_pixels)


def read_image(path: str | os.PathLike[str], *, background: tuple[int, int, int] = DEFAULT_BACKGROUND,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3) in display orientation."""
    return load_image(path, background=background, max_pixels=max_pixels).rgb
