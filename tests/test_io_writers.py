"""Atomic writers: round trips, no partial files on failure, resume helper."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import sapiens2.io.writers as writers_module
from sapiens2.io import (OutputWriteError, load_image, outputs_exist, remove_stale_temp_files, should_skip,
                         write_image, write_json, write_npy, write_ply, write_png)


def read_ply(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """A small independent PLY reader (vertex element only): returns the format and columns by name."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    assert lines[0] == "ply"
    fmt = lines[1].split()[1]
    count = next(int(l.split()[2]) for l in lines if l.startswith("element vertex"))
    props = [(l.split()[2], {"float": "<f4", "uchar": "u1"}[l.split()[1]]) for l in lines if l.startswith("property")]
    if fmt == "binary_little_endian":
        table = np.frombuffer(data[end:], dtype=np.dtype(props), count=count)
        assert len(data) - end == table.nbytes
        return fmt, {name: table[name] for name, _ in props}
    rows = [line.split() for line in data[end:].decode("ascii").splitlines()]
    assert len(rows) == count
    return fmt, {name: np.array([r[i] for r in rows], dtype=np.float64).astype(dtype)
                 for i, (name, dtype) in enumerate(props)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_json_round_trip_with_numpy(tmp_path):
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": [np.int64(7)], "p": tmp_path, "name": "é"}
    path = write_json(tmp_path / "deep" / "r.json", obj)
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 0.5, "b": [0, 1, 2], "c": [7],
                                                             "p": str(tmp_path), "name": "é"}
    assert leftovers(path.parent) == []


def test_json_failure_keeps_old_file(tmp_path):
    path = write_json(tmp_path / "r.json", {"v": 1})
    with pytest.raises(TypeError, match="object"):
        write_json(path, {"v": object()})
    with pytest.raises(ValueError):
        write_json(path, {"v": float("nan")})
    assert json.loads(path.read_text()) == {"v": 1} and leftovers(tmp_path) == []


def test_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "arr.npy"
    old = np.arange(4.0)
    write_npy(path, old)

    def save_then_fail(handle, array, allow_pickle):  # writes part of the file, then dies
        handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers_module.np, "save", save_then_fail)
    with pytest.raises(OutputWriteError, match="No space left") as info:
        write_npy(path, np.zeros(10))
    monkeypatch.undo()
    assert info.value.path == str(path)
    np.testing.assert_array_equal(np.load(path), old)
    assert leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):  # also for interruptions
        with writers_module.atomic_open(tmp_path / "new.bin") as handle:
            handle.write(b"half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arr.npy"]


def test_npy_round_trip(tmp_path):
    array = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.load(write_npy(tmp_path / "a.npy", array)), array)
    with pytest.raises(ValueError, match="pickle"):
        write_npy(tmp_path / "o.npy", np.array([object()]))


def test_png_round_trips_8_and_16_bit(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cv2.imread(str(write_png(tmp_path / "c.png", rgb)))[..., ::-1], rgb)
    depth16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    back = cv2.imread(str(write_png(tmp_path / "d.png", depth16)), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, depth16)
    rgb16 = rng.integers(0, 65536, (4, 3, 3), dtype=np.uint16)
    back = cv2.imread(str(write_png(tmp_path / "c16.png", rgb16)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back[..., ::-1], rgb16)
    rgba = rng.integers(0, 256, (4, 3, 4), dtype=np.uint8)
    loaded = load_image(write_png(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(loaded.alpha, rgba[..., 3])
    mask_png = write_png(tmp_path / "m.png", np.eye(3, dtype=bool))  # booleans are stored as 0 / 255
    np.testing.assert_array_equal(cv2.imread(str(mask_png), cv2.IMREAD_UNCHANGED), np.eye(3, dtype=np.uint8) * 255)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))
    assert leftovers(tmp_path) == []


def test_write_image_by_extension(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    jpg = write_image(tmp_path / "v.jpg", rgb)
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"
    assert np.abs(cv2.imread(str(jpg))[..., ::-1].astype(int) - rgb).max() < 4
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "noext", rgb)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    rng = np.random.default_rng(2)
    pointmap = rng.normal(size=(4, 5, 3)).astype(np.float32)
    pointmap[0, 0, 2] = np.nan  # dropped
    colours = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    normals = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.ones((4, 5), bool)
    mask[3, 4] = False  # dropped
    fmt, cols = read_ply(write_ply(tmp_path / "p.ply", pointmap, colours, normals=normals, mask=mask,
                                   binary=binary))
    assert fmt == ("binary_little_endian" if binary else "ascii")
    keep = mask & np.isfinite(pointmap).all(axis=2)
    assert keep.sum() == 18 and len(cols["x"]) == 18
    np.testing.assert_array_equal(np.stack([cols["x"], cols["y"], cols["z"]], 1), pointmap[keep])
    np.testing.assert_array_equal(np.stack([cols["nx"], cols["ny"], cols["nz"]], 1), normals[keep])
    np.testing.assert_array_equal(np.stack([cols["red"], cols["green"], cols["blue"]], 1), colours[keep])
    assert cols["red"].dtype == np.uint8 and cols["x"].dtype == np.float32


def test_ply_points_only_and_float_colours(tmp_path):
    points = np.array([[1, 2, 3], [4, 5, 6]], np.float64)
    fmt, cols = read_ply(write_ply(tmp_path / "q.ply", points, np.array([[1.0, 0.5, 0.0], [0, 0, 2.0]])))
    np.testing.assert_array_equal(cols["red"], [255, 0])
    np.testing.assert_array_equal(cols["green"], [128, 0])
    np.testing.assert_array_equal(cols["blue"], [0, 255])
    fmt, cols = read_ply(write_ply(tmp_path / "r.ply", points))
    assert set(cols) == {"x", "y", "z"}
    with pytest.raises(ValueError, match="colors"):
        write_ply(tmp_path / "s.ply", points, np.zeros((3, 3), np.uint8))


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputWriteError, match="cannot create output directory") as info:
        write_json(blocker / "sub" / "r.json", {})
    assert "file" in info.value.path
    # the folder exists but the file cannot be created there (a name no filesystem takes: fails for root too,
    # unlike permission bits)
    with pytest.raises(OutputWriteError, match="cannot create a file"):
        write_npy(tmp_path / ("a" * 300 + ".npy"), np.zeros(2))
    assert list(tmp_path.iterdir()) == [blocker]  # no temporary file left behind


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_resume_helpers(tmp_path):
    a, b = tmp_path / "x.json", tmp_path / "x.png"
    assert not outputs_exist([]) and not should_skip([a, b])
    write_json(a, {})
    assert not outputs_exist([a, b])
    b.write_bytes(b"")  # an empty file is not a finished output
    assert not outputs_exist([a, b])
    write_png(b, np.zeros((2, 2), np.uint8))
    assert outputs_exist([a, str(b)]) and should_skip([a, b]) and not should_skip([a, b], overwrite=True)


def test_remove_stale_temp_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".r.json.1234abcd.s2tmp").write_text("partial")
    (tmp_path / "sub" / ".v.deadbeef.s2tmp.mp4").write_bytes(b"partial")
    (tmp_path / ".keep").write_text("user file")
    (tmp_path / "r.json").write_text("{}")
    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [".keep", "r.json"]


def test_picture_png_same_pixels_other_encoding(tmp_path):
    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    image = cv2.resize(small, (130, 90), interpolation=cv2.INTER_CUBIC)  # smooth, photo-like
    image[::7] = rng.integers(0, 256, image[::7].shape, dtype=np.uint8)  # and noisy rows
    plain = writers_module.encode_image(image, ".png", png_compression=1)
    picture = writers_module.encode_image(image, ".png", png_compression=1, picture=True)
    assert picture != plain  # another filter and strategy ...
    for data in (plain, picture):  # ... the same pixels
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decoded[..., ::-1], image)
    path = writers_module.write_png(tmp_path / "p.png", image, picture=True)
    assert path.read_bytes() == writers_module.encode_image(image, ".png", picture=True)
    # the writers write the encoder's buffer itself (no copy to bytes): the same file content
    path = writers_module.write_image(tmp_path / "p.jpg", image)
    assert path.read_bytes() == writers_module.encode_image(image, ".jpg")


@pytest.mark.parametrize("channels", [3, 4])
def test_consumed_picture_reordered_in_place_band_by_band(tmp_path, monkeypatch, channels):
    image = np.random.default_rng(channels).integers(0, 256, (29, 17, channels), dtype=np.uint8)
    expected = writers_module.encode_image(image, ".png")  # from a reordered copy; the input untouched
    monkeypatch.setattr(writers_module, "_REORDER_BAND_BYTES", 1)  # one row per band
    given = image.copy()
    path = writers_module.write_png(tmp_path / "c.png", given, consume=True)
    assert path.read_bytes() == expected
    np.testing.assert_array_equal(given[..., :3], image[..., 2::-1])  # reordered in place: no copy was made


def test_png_written_in_memory_where_opencv_does_not_write_the_file(tmp_path, monkeypatch):
    image = np.random.default_rng(3).integers(0, 256, (21, 34, 3), dtype=np.uint8)
    expected = writers_module.encode_image(image, ".png", png_compression=1, picture=True)
    direct = writers_module.write_png(tmp_path / "direct.png", image, compression=1, picture=True)
    assert direct.read_bytes() == expected  # cv2.imwrite into the temporary file: the same bytes

    def refuse(name, *args):  # as OpenCV does for a name or a disk it cannot write to
        Path(name).write_bytes(b"partial")
        return False

    monkeypatch.setattr(writers_module.cv2, "imwrite", refuse)
    given = image.copy()
    path = writers_module.write_png(tmp_path / "fallback.png", given, compression=1, picture=True, consume=True)
    assert path.read_bytes() == expected  # reordered to BGR once, not twice
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    with pytest.raises(OutputWriteError, match="cannot create a file"):  # OpenCV's own refusal: the reason given
        writers_module.write_png(tmp_path / ("a" * 300 + ".png"), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.png", "fallback.png"]
