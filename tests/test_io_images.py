"""Reading images: colour order, grayscale, alpha, 16-bit, float, EXIF orientation, and bad files."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from sapiens2.errors import Sapiens2Error
from sapiens2.io import ImageReadError, decode_image, load_image, read_image


def exif_app1(orientation: int, big_endian: bool = False) -> bytes:
    """An APP1 segment holding a minimal EXIF block with only the orientation tag."""
    e = ">" if big_endian else "<"
    tiff = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8) + struct.pack(e + "H", 1)
    tiff += struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(e + "I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def marked_bgr(height=24, width=40):
    """A BGR image with a red block in the top-left corner and a blue one bottom-left."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[:8, :8] = (0, 0, 255)
    img[-8:, :8] = (255, 0, 0)
    return img


def test_colour_png_comes_back_rgb(tmp_path):
    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    loaded = load_image(tmp_path / "c.png")
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(loaded.rgb, bgr[..., ::-1])
    assert loaded.alpha is None and loaded.orientation == 1 and (loaded.height, loaded.width) == (5, 7)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    loaded = load_image(tmp_path / "g.png")
    assert loaded.rgb.shape == (3, 4, 3) and loaded.source_channels == 1
    for c in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., c], gray)


def test_rgba_is_composited_and_alpha_kept(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., :3] = (10, 20, 200)  # BGR: red-ish
    bgra[..., 3] = [[0, 128, 255], [255, 64, 0]]
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    loaded = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded.alpha, bgra[..., 3])
    colour = np.array([200, 20, 10], np.float64)
    a = bgra[..., 3].astype(np.float64)[..., None] / 255
    expected_white = np.rint(colour * a + 255 * (1 - a)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.rgb, expected_white)
    assert tuple(loaded.rgb[0, 0]) == (255, 255, 255) and tuple(loaded.rgb[0, 2]) == (200, 20, 10)
    on_black = read_image(tmp_path / "a.png", background=(0, 0, 0))
    np.testing.assert_array_equal(on_black, np.rint(colour * a).astype(np.uint8))


def test_gray_alpha_png(tmp_path):
    # cv2 cannot encode a 2-channel PNG, so build one by hand (colour type 4 = gray + alpha).
    pixels = np.array([[[100, 255], [100, 0]]], np.uint8)  # 1 x 2, (gray, alpha)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 4, 0, 0, 0))
           + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
    (tmp_path / "la.png").write_bytes(png)
    loaded = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(loaded.alpha, [[255, 0]])
    np.testing.assert_array_equal(loaded.rgb, [[[100, 100, 100], [255, 255, 255]]])


def test_16bit_is_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 65000]], np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), values)
    loaded = load_image(tmp_path / "d.png")
    assert loaded.source_dtype == "uint16"
    expected = np.rint(values / 257.0).astype(np.uint8)  # 0, 1, 255, 128, 4, 253
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)
    np.testing.assert_array_equal(expected, [[0, 1, 255], [128, 4, 253]])
    colour16 = np.zeros((1, 1, 3), np.uint16)
    colour16[0, 0] = (65535, 0, 32896)  # BGR
    cv2.imwrite(str(tmp_path / "c16.png"), colour16)
    assert tuple(read_image(tmp_path / "c16.png")[0, 0]) == (128, 0, 255)


def test_float_tiff_is_taken_as_unit_range(tmp_path):
    values = np.array([[0.5, 2.0, -1.0]], np.float32)
    assert cv2.imwrite(str(tmp_path / "f.tiff"), values)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff")[..., 0], [[128, 255, 0]])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_opencv_display(tmp_path, orientation):
    ok, jpg = cv2.imencode(".jpg", marked_bgr(), [cv2.IMWRITE_JPEG_QUALITY, 100])
    data = jpg.tobytes()
    data = data[:2] + exif_app1(orientation, big_endian=orientation % 2 == 0) + data[2:]
    (tmp_path / "o.jpg").write_bytes(data)
    loaded = load_image(tmp_path / "o.jpg")
    assert loaded.orientation == orientation
    shown = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # OpenCV applies EXIF here
    np.testing.assert_array_equal(loaded.rgb, shown[..., ::-1])
    assert loaded.rgb.shape == ((24, 40, 3) if orientation <= 4 else (40, 24, 3))


def test_exif_rotate_90_puts_top_left_at_top_right(tmp_path):
    ok, jpg = cv2.imencode(".jpg", marked_bgr(), [cv2.IMWRITE_JPEG_QUALITY, 100])
    (tmp_path / "r.jpg").write_bytes(jpg.tobytes()[:2] + exif_app1(6) + jpg.tobytes()[2:])
    rgb = read_image(tmp_path / "r.jpg").astype(int)
    assert rgb.shape == (40, 24, 3)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 255])
    assert np.abs(rgb[3, -4] - red).max() < 12  # stored top-left -> displayed top-right
    assert np.abs(rgb[3, 3] - blue).max() < 12  # stored bottom-left -> displayed top-left
    assert np.abs(rgb[-4, 3] - 128).max() < 12


def test_png_exif_rotates_alpha_with_colour(tmp_path):
    bgra = np.zeros((4, 6, 4), np.uint8)
    bgra[..., 3] = 255
    bgra[0, 0] = (0, 0, 255, 0)  # transparent top-left
    ok, png = cv2.imencode(".png", bgra)
    tiff = exif_app1(8)[10:]  # strip marker, length and "Exif\0\0"
    data = png.tobytes()[:33] + png_chunk(b"eXIf", tiff) + png.tobytes()[33:]
    loaded = decode_image(data, name="mem.png")
    assert loaded.orientation == 8 and loaded.rgb.shape == (6, 4, 3) and loaded.alpha.shape == (6, 4)
    # rotate 90 degrees counter-clockwise: top-left goes to bottom-left
    assert loaded.alpha[-1, 0] == 0 and (loaded.alpha == 0).sum() == 1
    assert tuple(loaded.rgb[-1, 0]) == (255, 255, 255)


def test_jpeg_with_data_after_end_marker_still_reads(tmp_path):
    ok, jpg = cv2.imencode(".jpg", marked_bgr())
    (tmp_path / "motion.jpg").write_bytes(jpg.tobytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    assert read_image(tmp_path / "motion.jpg").shape == (24, 40, 3)


@pytest.mark.parametrize("cut", ["half", "no_end_marker"])
def test_truncated_jpeg_raises(tmp_path, cut):
    ok, jpg = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = jpg.tobytes()
    data = data[: len(data) // 2] if cut == "half" else data[:-2]
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_truncated_png_raises(tmp_path):
    ok, png = cv2.imencode(".png", np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (tmp_path / "cut.png").write_bytes(png.tobytes()[:-40])
    with pytest.raises(ImageReadError, match="corrupt PNG"):
        read_image(tmp_path / "cut.png")


def test_text_file_named_jpg_raises(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, I am not a picture\n")
    with pytest.raises(ImageReadError, match="not an image") as info:
        read_image(tmp_path / "notes.jpg")
    assert isinstance(info.value, Sapiens2Error) and isinstance(info.value, ValueError)
    assert "notes.jpg" in str(info.value)


def test_empty_missing_and_directory_raise(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_jpeg_completeness_check_itself():
    # OpenCV 4.x decodes a cut JPEG into a partly grey image without failing; this check catches it.
    from sapiens2.io.metadata import jpeg_is_complete

    ok, jpg = cv2.imencode(".jpg", marked_bgr())
    data = jpg.tobytes()
    assert jpeg_is_complete(data) and jpeg_is_complete(data + b"trailer")
    assert not jpeg_is_complete(data[:-2]) and not jpeg_is_complete(data[: len(data) // 2])
    with_thumbnail_marker = data[:2] + exif_app1(1) + b"\xff\xd9" + data[2:-2]  # EOI only before the scan
    assert not jpeg_is_complete(with_thumbnail_marker)
