"""Container-level facts OpenCV does not give us with ``IMREAD_UNCHANGED``: the EXIF orientation tag
(JPEG APP1, PNG ``eXIf``, WebP ``EXIF``) and whether a JPEG's image data reaches its end marker.

OpenCV only applies EXIF orientation when it also drops alpha and bit depth, so we decode unchanged and
rotate ourselves. Parsing is defensive: malformed metadata means "no orientation", never an exception.
"""
from __future__ import annotations

import logging
import struct

import numpy as np

logger = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
_SHORT = 3


def _tiff_orientation(tiff: bytes) -> int:
    """Orientation (1..8) from a TIFF/EXIF block's first IFD; 1 when absent or malformed."""
    if len(tiff) < 8:
        return 1
    if tiff[:2] == b"II":
        endian = "<"
    elif tiff[:2] == b"MM":
        endian = ">"
    else:
        return 1
    magic, ifd = struct.unpack(endian + "HI", tiff[2:8])
    if magic != 42 or ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            break
        tag, kind, n = struct.unpack(endian + "HHI", tiff[entry:entry + 8])
        if tag == _ORIENTATION_TAG and kind == _SHORT and n >= 1:
            (value,) = struct.unpack(endian + "H", tiff[entry + 8:entry + 10])
            return int(value) if 1 <= value <= 8 else 1
    return 1


def _exif_payload_orientation(payload: bytes) -> int:
    if payload.startswith(b"Exif\x00\x00"):
        payload = payload[6:]
    return _tiff_orientation(payload)


def jpeg_layout(data: bytes) -> tuple[int, int | None]:
    """Walk a JPEG's marker segments up to the first scan: (EXIF orientation, offset of the scan data).

    The offset is None when the segment chain is broken before any scan starts.
    """
    orientation = 1
    pos = 2  # after SOI
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return orientation, None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2:
            return orientation, None
        if marker == 0xDA:  # start of scan: the entropy-coded data follows this header
            return orientation, pos + 2 + length
        if marker == 0xE1 and orientation == 1:
            orientation = _exif_payload_orientation(data[pos + 4:pos + 2 + length])
        pos += 2 + length
    return orientation, None


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG has an end-of-image marker after its first scan.

    Inside scan data 0xFF is always byte-stuffed, so 0xFFD9 after the scan start can only be the real end
    marker. Bytes appended after it (e.g. motion-photo videos) are allowed.
    """
    _, scan = jpeg_layout(data)
    return scan is not None and data.find(b"\xff\xd9", scan) >= 0


def _png_orientation(data: bytes) -> int:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"eXIf":
            return _exif_payload_orientation(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    return 1


def _webp_orientation(data: bytes) -> int:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        if kind == b"EXIF":
            return _exif_payload_orientation(data[pos + 8:pos + 8 + length])
        pos += 8 + length + (length & 1)
    return 1


def exif_orientation(data: bytes) -> int:
    """EXIF orientation (1..8, 1 = as stored) of an encoded JPEG, PNG or WebP; 1 for other formats."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            return jpeg_layout(data)[0]
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return _png_orientation(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_orientation(data)
    except struct.error:  # a truncated metadata block: treat as no orientation
        logger.debug("malformed EXIF metadata ignored")
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored image (H, W, ...) into its display orientation per the EXIF tag value."""
    if orientation == 2:
        out = image[:, ::-1]
    elif orientation == 3:
        out = image[::-1, ::-1]
    elif orientation == 4:
        out = image[::-1]
    elif orientation == 5:
        out = np.swapaxes(image, 0, 1)
    elif orientation == 6:
        out = np.rot90(image, k=-1)
    elif orientation == 7:
        out = np.swapaxes(image[::-1, ::-1], 0, 1)
    elif orientation == 8:
        out = np.rot90(image, k=1)
    else:
        return image
    return np.ascontiguousarray(out)
