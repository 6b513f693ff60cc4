"""Input discovery and video streaming / writing."""
import logging
import os
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

import sapiens2.io.video as video_module
from sapiens2.io import OutputWriteError, VideoReadError, VideoWriter, discover_inputs, input_kind
from sapiens2.video.sources import SourceSpec, open_source


def open_video(path):
    """A video file through the one video reader (files, folders, cameras, streams), as the predict job opens it."""
    return open_source(SourceSpec("file", Path(path)))


def write_synthetic_mp4(path: Path, frames: int = 7, size=(32, 24), fps: float = 12.0) -> list[np.ndarray]:
    """Frames of flat, distinct colours written with plain cv2 (BGR)."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    made = []
    for i in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:] = (30 * i, 255 - 30 * i, 100)  # BGR
        writer.write(frame)
        made.append(frame)
    writer.release()
    return made


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_nested_folder(tmp_path):
    root = tmp_path / "in"
    for name in ["b/2.JPG", "b/10.png", "a.png", "b/c/clip.MP4", "b/c/z.webp", ".hidden/x.png", ".a.png.s2tmp",
                 "notes.txt", "b/.skip.jpg"]:
        touch(root / name)
    loose = touch(tmp_path / "single.jpeg")
    found = discover_inputs([root, loose, tmp_path / "missing.png", tmp_path / "gone_dir"])
    rel = [str(item.relative) for item in found]
    assert rel == ["a.png", "b/10.png", "b/2.JPG", "b/c/clip.MP4", "b/c/z.webp", "single.jpeg"]
    assert [item.kind for item in found] == ["image"] * 3 + ["video"] + ["image"] * 2
    assert [str(i.relative) for i in found.videos] == ["b/c/clip.MP4"] and len(found.images) == 5
    assert found.items[0].path == root / "a.png" and found.items[3].is_video
    assert found.missing == [tmp_path / "missing.png", tmp_path / "gone_dir"]
    assert found.unsupported == [] and found.empty_folders == []
    # deterministic, and a file reached twice is listed once
    again = discover_inputs([root, root / "a.png", str(loose)])
    assert [i.path for i in again] == [i.path for i in found]


def test_discover_single_paths_and_unsupported(tmp_path):
    video = touch(tmp_path / "v.mkv")
    text = touch(tmp_path / "readme.txt")
    found = discover_inputs(str(video))
    assert len(found) == 1 and found.items[0].kind == "video" and found.items[0].relative == Path("v.mkv")
    found = discover_inputs([text])
    assert len(found) == 0 and found.unsupported == [text]
    (tmp_path / "empty").mkdir()
    found = discover_inputs([tmp_path, tmp_path / "empty"])  # a folder with no image or video is reported
    assert [i.path for i in found] == [video] and found.empty_folders == [tmp_path / "empty"]
    assert input_kind("x.TIFF") == "image" and input_kind("x.webm") == "video" and input_kind("x.gz") is None


def test_video_streams_frames(tmp_path):
    made = write_synthetic_mp4(tmp_path / "clip.mp4")
    source = open_video(tmp_path / "clip.mp4")
    assert (source.frame_count, source.width, source.height) == (7, 32, 24)
    assert source.fps == pytest.approx(12.0) and source.fps_reported
    stream = source.frames()
    assert isinstance(stream, types.GeneratorType)  # lazily decoded, one frame at a time
    frames = [(f.index, f.rgb) for f in stream]
    assert [i for i, _ in frames] == list(range(7))
    for (_, rgb), bgr in zip(frames, made):
        assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
        assert np.abs(rgb.astype(int).mean(axis=(0, 1)) - bgr[0, 0, ::-1]).max() < 8  # lossy codec
    assert [f.index for f in source.frames(step=3)] == [0, 3, 6]
    assert [f.index for f in source.frames(step=2, max_frames=2)] == [0, 2]
    assert sum(1 for _ in source) == 7  # iterating again starts from the beginning


def test_bad_videos_raise(tmp_path):
    touch(tmp_path / "empty.mp4", b"")
    touch(tmp_path / "text.mp4", b"this is not a video at all\n" * 10)
    with pytest.raises(VideoReadError, match="empty"):
        open_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoReadError, match="text.mp4"):
        open_video(tmp_path / "text.mp4")
    with pytest.raises(VideoReadError, match="does not exist"):
        open_video(tmp_path / "none.mp4")


def test_video_writer_is_atomic_and_round_trips(tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    with VideoWriter(out, fps=10) as writer:
        for i in range(5):
            writer.write(np.full((24, 32, 3), (40 * i, 100, 200), np.uint8))
            assert not out.exists()  # only the hidden temporary file exists while writing
        assert len(list(out.parent.glob(".out.*.s2tmp.mp4"))) == 1
    assert out.is_file() and writer.path == out and writer.fourcc in ("avc1", "mp4v") and writer.frames_written == 5
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]
    source = open_video(out)
    assert (source.frame_count, source.width, source.height) == (5, 32, 24)
    last = list(source)[-1].rgb.astype(int)
    assert np.abs(last.mean(axis=(0, 1)) - (160, 100, 200)).max() < 8  # written as RGB, read back as RGB


def test_video_writer_pads_odd_sizes_and_checks_frames(tmp_path):
    with VideoWriter(tmp_path / "odd.mp4", fps=5) as writer:
        for _ in range(3):
            writer.write(np.zeros((21, 33), np.uint8))  # grayscale accepted
        with pytest.raises(ValueError, match="differs"):
            writer.write(np.zeros((20, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((21, 33, 3), np.float32))
    source = open_video(tmp_path / "odd.mp4")
    assert (source.width, source.height, source.frame_count) == (34, 22, 3)
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "x.mp4", fps=0)


def test_video_writer_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "bad.mp4", fps=5) as writer:
            writer.write(np.zeros((8, 8, 3), np.uint8))
            raise RuntimeError("pipeline failed")
    assert list(tmp_path.iterdir()) == []
    empty = VideoWriter(tmp_path / "none.mp4", fps=5)
    assert empty.close() is None and list(tmp_path.iterdir()) == []


def test_video_writer_unwritable_directory(tmp_path):
    blocker = touch(tmp_path / "file")
    with pytest.raises(OutputWriteError, match="file"):
        VideoWriter(blocker / "out.mp4", fps=5)


def test_video_writer_falls_back_to_mjpg_avi(tmp_path, monkeypatch, caplog):
    real = cv2.VideoWriter

    def no_mpeg(path, fourcc, fps, size):  # an OpenCV build without MPEG-4/H.264 encoders
        if fourcc in (cv2.VideoWriter_fourcc(*"mp4v"), cv2.VideoWriter_fourcc(*"avc1")):
            return real()  # never opened
        return real(path, fourcc, fps, size)

    monkeypatch.setattr(video_module.cv2, "VideoWriter", no_mpeg)
    with caplog.at_level(logging.WARNING, logger="sapiens2.io.video"):
        with VideoWriter(tmp_path / "clip.mp4", fps=5) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
    monkeypatch.undo()
    assert writer.path == tmp_path / "clip.avi" and writer.fourcc == "MJPG"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.avi"]
    assert "Motion-JPEG" in caplog.text
    assert open_video(tmp_path / "clip.avi").frame_count == 1


def _opencv_with_encoders(monkeypatch, *available: str) -> list[str]:
    """cv2.VideoWriter as in an OpenCV build with only ``available`` encoders; returns the fourccs tried."""
    real, tried = cv2.VideoWriter, []

    def writer(path, fourcc, fps, size):
        name = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4))
        tried.append(name)
        if name not in available:
            os.write(2, f"[libav] Could not find encoder for {name}\n".encode())  # as FFmpeg does, natively
            return real()  # never opened
        return real(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)  # stands in for any encoder

    monkeypatch.setattr(video_module.cv2, "VideoWriter", writer)
    monkeypatch.setattr(video_module, "_reported_fallbacks", set())
    return tried


def test_video_writer_prefers_h264_which_browsers_play(tmp_path, monkeypatch, caplog):
    tried = _opencv_with_encoders(monkeypatch, "avc1", "mp4v")
    with caplog.at_level(logging.WARNING, logger="sapiens2.io.video"):
        with VideoWriter(tmp_path / "clip.mp4", fps=5) as writer:
            writer.write(np.zeros((16, 16, 3), np.uint8))
    assert writer.fourcc == "avc1" and tried == ["avc1"] and caplog.text == ""


def test_video_writer_says_the_mp4v_fallback_once(tmp_path, monkeypatch, caplog, capfd):
    tried = _opencv_with_encoders(monkeypatch, "mp4v")  # the pip wheels: no H.264 encoder
    with caplog.at_level(logging.WARNING, logger="sapiens2.io.video"):
        for name in ("a.mp4", "b.mp4"):
            with VideoWriter(tmp_path / name, fps=5) as writer:
                writer.write(np.zeros((16, 16, 3), np.uint8))
            assert writer.fourcc == "mp4v" and writer.path == tmp_path / name
    assert tried == ["avc1", "mp4v"] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no avc1 encoder" in lines[0] and "mp4v" in lines[0] and "browsers" in lines[0]
    assert "Could not find encoder" not in capfd.readouterr().err  # the native lines of the failed try are hidden
