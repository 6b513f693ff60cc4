"""Image size from the file header, before anything is decoded, and the pixel limit checked with it.

A small compressed file can declare a huge image (a flat 20000x20000 PNG is about 1 MB and decodes to 1.2 GB,
and everything after the decoder scales with it), so the size is read from the header and checked against
``max_pixels`` first. Parsed: PNG (IHDR), JPEG (the SOFn frame header; the markers before it are skipped by
their lengths), WebP (VP8, VP8L, VP8X), TIFF (first IFD, either byte order, classic and BigTIFF), BMP, GIF
and PNM. Other formats OpenCV reads (JPEG 2000, OpenEXR, Radiance HDR, ...) are checked right after decoding.
"""
from __future__ import annotations

import struct

from .errors import ImageReadError, ImageTooLargeError

__all__ = ["DEFAULT_MAX_PIXELS", "header_size", "check_pixels"]

#: Default limit on width x height of an input (100 megapixels); 0 or None means no limit.
DEFAULT_MAX_PIXELS = 100_000_000


def _need(data: bytes, end: int, name: str, kind: str) -> None:
    if len(data) < end:
        raise ImageReadError(name, f"truncated {kind} header (the file ends before the image size)")


def _png(data: bytes, name: str) -> tuple[int, int]:
    _need(data, 24, name, "PNG")
    if data[12:16] != b"IHDR":
        raise ImageReadError(name, "corrupt PNG header (the first chunk is not IHDR)")
    return struct.unpack(">II", data[16:24])


# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM stand alone


def _jpeg(data: bytes, name: str) -> tuple[int, int]:
    pos = 2
    while True:
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        _need(data, pos + 2, name, "JPEG")
        if data[pos] != 0xFF:
            raise ImageReadError(name, f"corrupt JPEG header (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no frame header came before it
            raise ImageReadError(name, "corrupt JPEG header (no frame header before the image data)")
        _need(data, pos + 4, name, "JPEG")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF:
            _need(data, pos + 9, name, "JPEG")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if length < 2:
            raise ImageReadError(name, f"corrupt JPEG header (segment length {length} at byte {pos})")
        pos += 2 + length


def _webp(data: bytes, name: str) -> tuple[int, int]:
    _need(data, 30, name, "WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: frame tag (3 bytes), start code 9D 01 2A, then 14-bit sizes
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageReadError(name, "corrupt WebP header (no VP8 start code)")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature 0x2F, then width-1 and height-1 in 14 bits each
        if data[20] != 0x2F:
            raise ImageReadError(name, "corrupt WebP header (no VP8L signature)")
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: canvas width-1 and height-1 in 24 bits each
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageReadError(name, f"corrupt WebP header (unknown first chunk {chunk!r})")


_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8 (BigTIFF)


def _tiff(data: bytes, name: str) -> tuple[int, int]:
    _need(data, 8, name, "TIFF")
    endian = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack(endian + "H", data[2:4])
    big = magic == 43
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        _need(data, 16, name, "TIFF")
        (ifd,) = struct.unpack(endian + "Q", data[8:16])
        count_fmt, entry_size, value_at = "Q", 20, 12
    else:
        (ifd,) = struct.unpack(endian + "I", data[4:8])
        count_fmt, entry_size, value_at = "H", 12, 8
    count_size = struct.calcsize(count_fmt)
    _need(data, ifd + count_size, name, "TIFF")
    (count,) = struct.unpack(endian + count_fmt, data[ifd:ifd + count_size])
    found: dict[int, int] = {}
    for i in range(count):
        entry = ifd + count_size + entry_size * i
        _need(data, entry + entry_size, name, "TIFF")
        tag, kind = struct.unpack(endian + "HH", data[entry:entry + 4])
        if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and kind in _TIFF_TYPES:
            fmt = _TIFF_TYPES[kind]
            start = entry + value_at
            (found[tag],) = struct.unpack(endian + fmt, data[start:start + struct.calcsize(fmt)])
            if len(found) == 2:
                return found[_TIFF_WIDTH], found[_TIFF_LENGTH]
    raise ImageReadError(name, "corrupt TIFF header (the first IFD has no ImageWidth / ImageLength)")


def _bmp(data: bytes, name: str) -> tuple[int, int]:
    _need(data, 18, name, "BMP")
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        _need(data, 22, name, "BMP")
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    _need(data, 26, name, "BMP")
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _gif(data: bytes, name: str) -> tuple[int, int]:
    _need(data, 10, name, "GIF")
    return struct.unpack("<HH", data[6:10])


def _pnm(data: bytes, name: str) -> tuple[int, int]:
    numbers: list[int] = []
    pos = 2
    while len(numbers) < 2:
        while pos < len(data) and (data[pos:pos + 1].isspace() or data[pos:pos + 1] == b"#"):
            if data[pos:pos + 1] == b"#":  # a comment runs to the end of the line
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end
            pos += 1
        start = pos
        while pos < len(data) and data[pos:pos + 1].isdigit():
            pos += 1
        if pos == start or pos >= len(data):
            raise ImageReadError(name, "truncated or corrupt PNM header (no image size)")
        numbers.append(int(data[start:pos]))
    return numbers[0], numbers[1]


def header_size(data: bytes, name: str = "<bytes>") -> tuple[int, int] | None:
    """(width, height) declared by the header of encoded image bytes, or None for a format not parsed here.

    Raises :class:`ImageReadError` when the header of a recognised format is truncated or corrupt. Nothing is
    decoded; at most the header (for JPEG: the segments before the frame header) is read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data, name)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data, name)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data, name)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(data, name)
    if data.startswith(b"BM"):
        return _bmp(data, name)
    if data.startswith(b"GIF8"):
        return _gif(data, name)
    if len(data) >= 2 and data[:1] == b"P" and data[1:2] in b"123456":
        return _pnm(data, name)
    return None


def check_pixels(name: str, width: int, height: int, max_pixels: int | None, *,
                 error: type = ImageTooLargeError) -> None:
    """Raise ``error`` (an :class:`ImageTooLargeError` by default) when width x height is over ``max_pixels``
    (0 or None: no limit); also refuses a declared size of 0."""
    if width <= 0 or height <= 0:
        raise ImageReadError(name, f"the header declares an empty image ({width}x{height})")
    if max_pixels and width * height > max_pixels:
        raise error(name, width, height, int(max_pixels))
