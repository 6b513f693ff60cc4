"""The pixel limit read from image headers before decoding: every parsed format, truncated headers, the error."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from sapiens2.io import DEFAULT_MAX_PIXELS, ImageReadError, ImageTooLargeError, header_size, load_image
from sapiens2.io.images import decode_image

H, W = 37, 53  # odd, and not square: width and height cannot be swapped unnoticed


def encoded(ext: str, image: np.ndarray | None = None, params=()) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8) if image is None else image
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def tiff_by_hand(endian: str, width: int, height: int, big: bool = False, kind: int = 4) -> bytes:
    """A TIFF header with one IFD holding other tags first, then ImageWidth / ImageLength."""
    fmt = {3: "H", 4: "I", 16: "Q"}[kind]
    if big:
        head = (b"II" if endian == "<" else b"MM") + struct.pack(endian + "HHHQ", 43, 8, 0, 16)
        entries = [struct.pack(endian + "HHQ", 254, 4, 1) + struct.pack(endian + "Q", 0)]
        for tag, value in ((256, width), (257, height)):
            entries.append(struct.pack(endian + "HHQ", tag, kind, 1) + struct.pack(endian + fmt, value).ljust(8, b"\0"))
        return head + struct.pack(endian + "Q", len(entries)) + b"".join(entries)
    head = (b"II" if endian == "<" else b"MM") + struct.pack(endian + "HI", 42, 8)
    entries = [struct.pack(endian + "HHI", 254, 4, 1) + struct.pack(endian + "I", 0)]
    for tag, value in ((256, width), (257, height)):
        entries.append(struct.pack(endian + "HHI", tag, kind, 1) + struct.pack(endian + fmt, value).ljust(4, b"\0"))
    return head + struct.pack(endian + "H", len(entries)) + b"".join(entries)


def png_header_only(width: int, height: int) -> bytes:
    """What a decompression bomb starts with: a PNG signature and IHDR declaring a huge image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"


def vp8x(width: int, height: int) -> bytes:
    payload = b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_with_exif_first() -> bytes:
    """A JPEG whose APP1 (EXIF) and a COM segment come before the frame header, with fill bytes."""
    data = encoded(".jpg")
    exif = b"Exif\0\0" + tiff_by_hand("<", 1, 1)
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    com = b"\xff\xff\xfe" + struct.pack(">H", 7) + b"hello"
    return data[:2] + app1 + com + data[2:]


CASES = {
    "png": lambda: encoded(".png"),
    "png gray 16-bit": lambda: encoded(".png", np.zeros((H, W), np.uint16)),
    "jpeg": lambda: encoded(".jpg"),
    "jpeg progressive": lambda: encoded(".jpg", params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    "jpeg exif first": jpeg_with_exif_first,
    "webp lossy (VP8)": lambda: encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80)),
    "webp lossless (VP8L)": lambda: encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)),
    "webp extended (VP8X)": lambda: vp8x(W, H),
    "tiff": lambda: encoded(".tif"),
    "tiff big-endian SHORT": lambda: tiff_by_hand(">", W, H, kind=3),
    "tiff little-endian LONG": lambda: tiff_by_hand("<", W, H, kind=4),
    "bigtiff": lambda: tiff_by_hand(">", W, H, big=True, kind=16),
    "bmp": lambda: encoded(".bmp"),
    "pgm": lambda: encoded(".pgm", np.zeros((H, W), np.uint8)),
}


@pytest.mark.parametrize("case", CASES)
def test_header_size_of_every_format(case):
    assert header_size(CASES[case]()) == (W, H)


def test_bmp_top_down_and_webp_chunks_are_named():
    data = bytearray(encoded(".bmp"))
    data[22:26] = struct.pack("<i", -H)  # top-down rows: negative height
    assert header_size(bytes(data)) == (W, H)
    assert encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 80))[12:16] == b"VP8 "
    assert encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101))[12:16] == b"VP8L"


def test_unparsed_formats_are_left_to_the_decoder():
    assert header_size(b"\x76\x2f\x31\x01" + b"\0" * 40) is None  # OpenEXR
    assert header_size(b"not an image at all") is None


@pytest.mark.parametrize("case", ["png", "jpeg", "jpeg exif first", "webp lossy (VP8)", "webp lossless (VP8L)",
                                  "webp extended (VP8X)", "tiff", "tiff big-endian SHORT", "bigtiff", "bmp"])
def test_truncated_header_is_a_clear_error(case):
    data = CASES[case]()
    cut = {"png": 20, "jpeg": 8, "jpeg exif first": 30, "tiff": 12, "tiff big-endian SHORT": 12, "bigtiff": 20,
           "bmp": 20}.get(case, 22)
    with pytest.raises(ImageReadError, match="truncated .*header"):
        header_size(data[:cut], "x")


def test_jpeg_without_frame_header_is_corrupt():
    with pytest.raises(ImageReadError, match="no frame header"):
        header_size(b"\xff\xd8\xff\xda\x00\x02", "x")


def test_over_the_limit_is_refused_from_the_header_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # not even decodable: only the header is read
    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: decoded.append(1) or real_imdecode(*a, **k))
    with pytest.raises(ImageTooLargeError) as info:
        load_image(bomb)
    assert decoded == []  # refused from the header: the decoder was never reached (not a timing bound)
    message = str(info.value)
    assert "20000x20000" in message and "400.0 megapixels" in message and "--max-pixels" in message
    assert str(bomb) in message and info.value.limit == DEFAULT_MAX_PIXELS
    assert (info.value.width, info.value.height) == (20000, 20000)
    with pytest.raises(ImageReadError) as zero:  # no limit: the decoder is reached, and finds no image data
        load_image(bomb, max_pixels=0)
    assert not isinstance(zero.value, ImageTooLargeError) and decoded == [1]  # the spy sees a real decode


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_limit_applies_per_format_and_zero_means_none(tmp_path, ext):
    path = tmp_path / f"img{ext}"
    path.write_bytes(encoded(ext))
    with pytest.raises(ImageTooLargeError, match=f"{W}x{H}"):
        load_image(path, max_pixels=W * H - 1)
    assert load_image(path, max_pixels=W * H).rgb.shape == (H, W, 3)
    assert load_image(path, max_pixels=0).rgb.shape == (H, W, 3)


def test_formats_without_a_parsed_header_are_checked_after_decoding():
    ok, buf = cv2.imencode(".ppm", np.zeros((H, W, 3), np.uint8))  # parsed, but check the decoded path too
    data = buf.tobytes()
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=10)
    # a format header_size does not know: Radiance HDR
    ok, buf = cv2.imencode(".hdr", np.zeros((H, W, 3), np.float32))
    assert ok and header_size(buf.tobytes()) is None
    with pytest.raises(ImageTooLargeError):
        decode_image(buf.tobytes(), max_pixels=10)
    assert decode_image(buf.tobytes(), max_pixels=0).rgb.shape == (H, W, 3)


def test_opencv_own_limit_is_lifted():
    import os

    assert int(os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"]) >= 1 << 40
