"""Frame sources and the decoding thread: source parsing, positions, fake cameras/streams (no network), corrupt
frames and early ends, image folders, real mp4 sub-sampling, and the prefetch queue."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from sapiens2.io import VideoReadError
from sapiens2.video.prefetch import Prefetcher
from sapiens2.video.sources import open_source, parse_position, parse_source, redact_url


class FakeCapture:
    """A cv2.VideoCapture stand-in: frame i is filled with the value i; ``fail`` = indices whose read fails;
    after ``frames`` frames every read fails (a stream that stops) unless ``interrupt_at`` raises Ctrl-C."""

    def __init__(self, frames: int, *, fps: float = 0.0, count: int = 0, fail=(), size=(16, 12),
                 interrupt_at: int | None = None):
        self.frames, self.fps, self.count, self.fail = frames, fps, count, set(fail)
        self.size, self.interrupt_at = size, interrupt_at
        self.position = 0
        self.released = False
        self.opened_with = None

    def __call__(self, target):  # used as the open_capture factory
        self.opened_with = target
        self.position = 0
        return self

    def isOpened(self) -> bool:
        return True

    def _next(self):
        i = self.position
        self.position += 1
        if self.interrupt_at is not None and i == self.interrupt_at:
            raise KeyboardInterrupt
        if i >= self.frames or i in self.fail:
            return False, None
        return True, np.full((self.size[1], self.size[0], 3), i % 256, np.uint8)

    def read(self):
        return self._next()

    def grab(self) -> bool:
        return self._next()[0]

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: self.count,
                cv2.CAP_PROP_FRAME_WIDTH: self.size[0], cv2.CAP_PROP_FRAME_HEIGHT: self.size[1]}.get(prop, 0.0)

    def release(self) -> None:
        self.released = True


def test_parse_source_kinds(tmp_path):
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0 and parse_source(2).target == 2
    spec = parse_source("rtsp://admin:secret@127.0.0.1:8554/live/cam")
    assert spec.kind == "url" and spec.live and "secret" not in spec.display
    assert spec.stem == "stream_127_0_0_1_live_cam"
    assert parse_source("https://127.0.0.1/video.mjpg").kind == "url"
    assert parse_source(tmp_path).kind == "folder"
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert parse_source(str(tmp_path / "a.mp4")).kind == "file"
    assert parse_source(f"file://{tmp_path / 'a.mp4'}").kind == "file"
    with pytest.raises(ValueError, match="scheme"):
        parse_source("ftp://127.0.0.1/x")
    with pytest.raises(ValueError, match="no host"):
        parse_source("rtsp:///x")
    with pytest.raises(ValueError, match="neither"):
        parse_source(str(tmp_path / "missing.mp4"))
    assert redact_url("http://u:p@h/x?y=1") == "http://***@h/x?y=1" and redact_url("http://h/x") == "http://h/x"


@pytest.mark.parametrize("text, index", [("12.5", 375), ("12.5s", 375), ("1:30", 2700), ("0:01:30.5", 2715),
                                         ("300f", 300), (".5", 15), (None, None)])
def test_positions(text, index):
    assert parse_position(text, 30.0) == index


def test_bad_position():
    with pytest.raises(ValueError, match="300f"):
        parse_position("ten", 30.0)


def test_camera_through_a_fake_capture_streams_until_it_stops():
    camera = FakeCapture(7, size=(16, 12))
    source = open_source("0", open_capture=camera)
    assert camera.opened_with == 0 and source.live and (source.width, source.height) == (16, 12)
    assert source.fps == 30.0 and not source.fps_reported  # a webcam that reports no rate
    frames = list(source.frames(step=2))
    assert [f.index for f in frames] == [0, 2, 4, 6]
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [0, 2, 4, 6] and frames[0].rgb.shape == (12, 16, 3)
    times = [f.time_s for f in frames]
    assert times[0] == 0.0 and times == sorted(times)
    assert camera.released and any("stopped delivering" in issue for issue in source.issues)
    with pytest.raises(VideoReadError, match="read once"):
        list(source.frames())


def test_stream_url_max_frames_and_a_bad_frame():
    stream = FakeCapture(100, fps=25.0, fail={3})
    source = open_source("rtsp://127.0.0.1:8554/x", open_capture=stream)
    frames = list(source.frames(max_frames=5))
    assert stream.opened_with == "rtsp://127.0.0.1:8554/x" and source.fps == 25.0
    assert [f.index for f in frames] == [0, 1, 2, 4, 5]  # frame 3 lost, reported, the stream goes on
    assert source.issues == ["frame 3 could not be read; skipped"]


def test_unopenable_camera_is_a_clear_error():
    class Closed(FakeCapture):
        def isOpened(self):
            return False

    with pytest.raises(VideoReadError, match="camera cannot be opened"):
        open_source("3", open_capture=Closed(0))


def test_file_with_a_corrupt_frame_and_an_early_end(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"not read: the fake capture stands in for the decoder")
    capture = FakeCapture(8, fps=10.0, count=12, fail={3})
    source = open_source(path, open_capture=capture)
    assert source.frame_count == 12 and not source.live
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 2, 4, 5, 6, 7] and frames[4].time_s == pytest.approx(0.5)
    assert "frame 3 could not be decoded" in source.issues[0]
    assert "ended early: frame 8 of the 12" in source.issues[1]


def write_mp4(path, frames: int, size=(32, 24), fps: float = 10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


def test_real_video_start_end_every(tmp_path):
    source = open_source(write_mp4(tmp_path / "c.mp4", 12))
    assert (source.fps, source.frame_count, source.width, source.height) == (10.0, 12, 32, 24)
    frames = list(source.frames(step=3, start=2, end=10))
    assert [f.index for f in frames] == [2, 5, 8] and frames[1].time_s == pytest.approx(0.5)
    assert abs(int(frames[1].rgb.mean()) - 100) < 8  # frame 5 was painted 20 * 5
    assert list(f.index for f in source.frames(max_frames=2)) == [0, 1] and not source.issues
    with pytest.raises(ValueError, match="start"):
        source.frames(start=5, end=2)


def test_image_folder_in_natural_order_with_a_corrupt_frame(tmp_path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((12, 16, 3), i, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"broken")
    cv2.imwrite(str(tmp_path / "f4.png"), np.zeros((10, 10, 3), np.uint8))
    source = open_source(tmp_path, fps=5.0)
    frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 4] and [int(f.rgb[0, 0, 0]) for f in frames] == [1, 2, 10]
    assert frames[2].time_s == pytest.approx(0.8)
    assert len(source.issues) == 2 and "f3.png" in source.issues[0] and "10x10" in source.issues[1]


def test_prefetcher_overlaps_and_propagates_errors():
    def slow():
        for i in range(6):
            time.sleep(0.01)
            yield i
        raise RuntimeError("decoder died")

    reader = Prefetcher(slow(), depth=3)
    got = []
    with pytest.raises(RuntimeError, match="decoder died"):
        for item in reader:
            got.append(item)
    assert got == list(range(6)) and reader.count == 6 and reader.wait_s > 0
    assert list(Prefetcher(iter(range(4)), depth=0)) == [0, 1, 2, 3]


def test_prefetcher_close_stops_the_reader_early():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    reader = Prefetcher(endless(), depth=2)
    assert next(reader) == 0
    reader.close()
    assert not any(t.name == "s2-decode" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 5  # bounded: the queue holds 2, the reader stops
