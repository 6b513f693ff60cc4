"""Live mode: the latest-frame-wins grabber drops (never queues) what the model has no time for, pose boxes come
from the previous frame's keypoints with re-detection at the interval and when confidence drops, and
``sapiens2 predict --live`` on a video file. Deterministic: the source hands out frames only when the model stub
allows it (K frames per model pass, waited for with a condition), and the clock is a counter the model advances."""
from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest

from conftest import write_tiny_checkpoints
from sapiens2.cli.main import main
from sapiens2.serving.live_job import REUSED_BOXES, LiveOptions, LiveSession, run_live
from sapiens2.tasks.detection.boxes import Detections
from sapiens2.tasks.results import PoseResult, Prediction
from sapiens2.video.live import BoxReuseOptions, KeypointBoxes, LatestFrameGrabber, keypoint_box
from sapiens2.video.sources import Frame, FrameSource
from sapiens2.video.synthetic import crossing_clip

WAIT_S = 20.0  # a safety net against a hang only: every wait below ends by a condition, not by time


@pytest.fixture(scope="module")
def clip():
    return crossing_clip(14, height=64, width=48)


class FakeClock:
    """Time that moves only when the model stub says so."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class GatedSource(FrameSource):
    """A live source whose frame i > 0 is delivered only after a permit: :meth:`allow` releases ``k`` frames and
    waits until the grabber has stored them (the generator resumes after a yield only when the grabber asks for
    the next frame, i.e. after it stored the previous one)."""

    live = True

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0):
        super().__init__("gated")
        self.rgb, self.fps = frames, fps
        self.height, self.width = frames[0].shape[:2]
        self.permits = threading.Semaphore(0)
        self.cond = threading.Condition()
        self.stored = 0

    def _frames(self, step, start, end, max_frames):
        for i, rgb in enumerate(self.rgb):
            if i > 0 and not self.permits.acquire(timeout=WAIT_S):
                raise RuntimeError("test source: no permit came")
            yield Frame(i, i / self.fps, rgb)
            with self.cond:
                self.stored = i + 1
                self.cond.notify_all()

    def open_gate(self) -> None:
        """Let every remaining frame through (a run about to stop must not leave the grabber waiting)."""
        for _ in self.rgb:
            self.permits.release()

    def allow(self, k: int) -> None:
        with self.cond:
            target = min(self.stored + k, len(self.rgb))
        for _ in range(k):
            self.permits.release()
        with self.cond:
            assert self.cond.wait_for(lambda: self.stored >= target, WAIT_S), "the grabber did not read"


class GatedModel:
    """Wraps a predictor: each pass lets the source deliver ``k`` frames, waits until they are read, then
    advances the clock by ``step_s`` (the model's time) and predicts. Counts the frames it saw and its detector
    passes (requests without boxes)."""

    def __init__(self, inner, source: GatedSource, clock: FakeClock, k: int, step_s: float = 0.1):
        self.inner, self.source, self.clock, self.k, self.step_s = inner, source, clock, k, step_s
        self.tasks = inner.tasks
        self.seen: list[int] = []
        self.given_boxes: dict[int, np.ndarray | None] = {}

    def predict(self, request):
        self.source.allow(self.k)
        self.clock.t += self.step_s
        self.seen.append(request.frame_index)
        self.given_boxes[request.frame_index] = None if request.boxes is None else np.asarray(request.boxes)
        return self.inner.predict(request)


class ScriptedPose:
    """One person whose keypoints fill the middle of the frame; their scores per frame from ``scores``
    (missing frames: 0.9); frames in ``nobody`` have no person. ``detector_calls``: requests without boxes."""

    tasks = ["pose"]

    def __init__(self, scores: dict[int, float] | None = None, nobody=()):
        self.scores, self.nobody = scores or {}, set(nobody)
        self.detector_calls = 0

    def predict(self, request):
        h, w = request.image.shape[:2]
        if request.boxes is None:
            self.detector_calls += 1
        if request.frame_index in self.nobody:
            return Prediction((h, w), pose=PoseResult(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 308, 2)),
                                                       np.zeros((0, 308)), "detector:fake"))
        grid = np.stack(np.meshgrid(np.linspace(w * 0.3, w * 0.7, 14), np.linspace(h * 0.2, h * 0.8, 22)), -1)
        keypoints = grid.reshape(-1, 2)[:308][None]
        score = self.scores.get(request.frame_index, 0.9)
        return Prediction((h, w), pose=PoseResult(np.array([[0, 0, w - 1, h - 1]], float), np.ones(1), keypoints,
                                                  np.full((1, 308), score), "detector:fake"))


def test_the_model_takes_the_newest_frame_and_the_rest_are_dropped(clip, tmp_path):
    clock = FakeClock()
    source = GatedSource(clip.frames[:13])
    model = GatedModel(ScriptedPose(), source, clock, k=3)  # 3 new frames arrive during every model pass
    session = LiveSession(model, source, LiveOptions(boxes=BoxReuseOptions(redetect_every=100)), clock=clock)
    report = run_live(session, tmp_path / "gated", display=False)
    assert model.seen == [0, 3, 6, 9, 12]  # 1, 2, 4, 5, ... were replaced by newer frames before the model was free
    s = report.summary
    assert (s["frames_read"], s["frames_processed"], s["frames_dropped"]) == (13, 5, 8)
    assert s["stopped_by"] == "end"
    # the clock moves 0.1 s per pass: frame 0 waits one pass, each later one was read during the pass before
    assert s["latency_ms_p50"] == pytest.approx(200.0) and s["latency_ms_p95"] == pytest.approx(200.0)
    assert s["fps"] == pytest.approx(10.0) and s["wall_s"] == pytest.approx(0.5)
    lines = (tmp_path / "gated.pose.jsonl").read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["live"] is True and [r["frame_index"] for r in records] == [0, 3, 6, 9, 12]
    assert [r["latency_ms"] for r in records] == pytest.approx([100.0, 200.0, 200.0, 200.0, 200.0])
    assert json.loads((tmp_path / "gated.live.json").read_text())["frames_dropped"] == 8
    assert any("dropped 8" in line for line in report.lines())


def test_grabber_counts_every_frame_once_and_hands_over_a_source_error():
    def frames():
        yield Frame(0, 0.0, np.zeros((2, 2, 3), np.uint8))
        yield Frame(1, 0.1, np.zeros((2, 2, 3), np.uint8))
        raise OSError("camera unplugged")

    grabber = LatestFrameGrabber(frames())
    with grabber:
        assert grabber.wait_ended(WAIT_S)  # the source is finished: both frames read, the second replaced the first
        taken = grabber.take()
        assert taken.frame.index == 1 and taken.seq == 1
        with pytest.raises(OSError, match="unplugged"):
            grabber.take()
        assert grabber.take() is None
    assert (grabber.read, grabber.taken, grabber.dropped) == (2, 1, 1)


def test_keypoint_boxes_from_confident_points_expanded_clipped_and_deduplicated():
    kb = KeypointBoxes(BoxReuseOptions(redetect_every=3, keypoint_score=0.5, min_keypoints=2, min_confidence=0.05,
                                       expand=1.5, min_side=8))
    assert kb.next_boxes((100, 80)) == (None, "start")
    points = np.zeros((3, 308, 2))
    scores = np.full((3, 308), 0.1)
    points[0, :2] = [[10, 20], [30, 60]]  # confident: box 10..30 x 20..60, expanded 1.5x: 5..35 x 10..70
    points[1, :2] = [[70, 80], [90, 99]]  # sticks out of the 80-wide image: cut at x = 79
    points[2, :2] = [[11, 20], [30, 61]]  # almost the same as person 0, less confident: dropped
    points[:, 2:] = [200, 200]  # not confident: ignored
    scores[:, :2] = 0.9
    scores[2, 2:] = 0.08  # mean 0.085 against person 0's 0.105
    kb.update(PoseResult(np.zeros((3, 4)), np.ones(3), points, scores))
    boxes, reason = kb.next_boxes((100, 80))
    assert reason is None and boxes.shape == (2, 5)
    np.testing.assert_allclose(boxes[0, :4], [5, 10, 35, 70])
    np.testing.assert_allclose(boxes[1, :4], [65, 75.25, 79, 99])
    np.testing.assert_allclose(keypoint_box(np.array([[0, 0], [2, 4]]), 2.0), [-1, -2, 3, 6])
    kb.update(PoseResult(np.zeros((1, 4)), np.ones(1), points[:1], scores[:1]))
    assert kb.next_boxes((100, 80))[1] is None
    assert kb.next_boxes((100, 80)) == (None, "interval")  # the 3rd frame since the last detection
    kb.update(PoseResult(np.zeros((1, 4)), np.ones(1), points[:1], np.full((1, 308), 0.04)))
    assert kb.next_boxes((100, 80)) == (None, "low_confidence")
    assert kb.detections == {"start": 1, "interval": 1, "low_confidence": 1, "no_people": 0} and kb.reused == 2
    with pytest.raises(ValueError, match="redetect_every"):
        BoxReuseOptions(redetect_every=0)


def test_detector_runs_at_the_start_when_confidence_drops_and_when_nobody_is_left(clip):
    clock = FakeClock()
    source = GatedSource(clip.frames[:14])
    inner = ScriptedPose(scores={3: 0.1, 8: 0.1}, nobody={11})
    model = GatedModel(inner, source, clock, k=1)  # one frame per pass: nothing dropped
    session = LiveSession(model, source, LiveOptions(boxes=BoxReuseOptions(redetect_every=100)), clock=clock)
    results = list(session.results())
    detected = [r.frame.index for r in results if r.detect_reason is not None]
    assert detected == [0, 4, 9, 12] and inner.detector_calls == 4  # after frames 3 and 8 (low) and 11 (nobody)
    assert session.boxes.detections == {"start": 1, "interval": 0, "low_confidence": 2, "no_people": 1}
    assert session.summary()["frames_dropped"] == 0 and len(results) == 14
    assert results[1].prediction.pose.box_source == REUSED_BOXES
    # a Python caller that stops iterating: the grabber stops, the summary says so
    source = GatedSource(clip.frames[:6])
    session = LiveSession(GatedModel(ScriptedPose(), source, clock, k=1), source, clock=clock)
    results = session.results()
    next(results), next(results)
    source.open_gate()
    results.close()
    assert session.stopped_by == "closed" and session.summary()["frames_processed"] == 2


def test_a_real_tiny_model_reuses_its_keypoints_and_redetects_every_n(clip, tmp_path, one_torch_thread):
    from sapiens2.inference.predictor import Predictor

    class CountingDetector:
        calls = 0

        def detect(self, rgb):
            CountingDetector.calls += 1
            h, w = rgb.shape[:2]
            return Detections(np.array([[4, 4, w - 5, h - 5]], np.float32), np.ones(1, np.float32))

    paths = write_tiny_checkpoints(tmp_path, ["pose"], (64, 48))
    predictor = Predictor("pose", paths["pose"], device="cpu", detector=CountingDetector(), input_size=(64, 48))
    clock = FakeClock()
    source = GatedSource(clip.frames[:12])
    model = GatedModel(predictor, source, clock, k=1)
    # every keypoint counts as confident (random weights): only the interval decides
    options = BoxReuseOptions(redetect_every=5, keypoint_score=0.0, min_confidence=0.0, min_side=1.0)
    session = LiveSession(model, source, LiveOptions(boxes=options, max_frames=12), clock=clock)
    results = list(session.results())
    assert len(results) == 12 and session.stopped_by == "max_frames"
    assert CountingDetector.calls == 3 == session.boxes.detector_calls  # frames 0, 5 and 10 of 12
    assert [i for i, b in model.given_boxes.items() if b is None] == [0, 5, 10]
    for prev, cur in zip(results, results[1:]):  # a reused box = the previous keypoints' box, expanded, in the image
        if cur.detect_reason is None:
            expected = keypoint_box(prev.prediction.pose.keypoints[0], options.expand)
            expected = np.clip(expected, 0, [47, 63, 47, 63])
            np.testing.assert_allclose(cur.prediction.pose.boxes[0], expected, atol=1e-3)


def test_ctrl_c_and_quitting_the_window_publish_what_was_processed(clip, tmp_path):
    class Interrupting(ScriptedPose):
        def predict(self, request):
            if request.frame_index == 3:
                source.open_gate()
                raise KeyboardInterrupt
            return super().predict(request)

    class QuitOnThird:
        shown = 0

        def show(self, rgb):
            QuitOnThird.shown += 1
            assert rgb.shape == clip.frames[0].shape and rgb.dtype == np.uint8
            if QuitOnThird.shown == 3:
                source.open_gate()
            return QuitOnThird.shown < 3

        def close(self):
            pass

    for inner, display, stop, frames in ((Interrupting(), False, "interrupted", 3), (ScriptedPose(), QuitOnThird(),
                                                                                      "quit", 3)):
        clock = FakeClock()
        source = GatedSource(clip.frames[:8])
        session = LiveSession(GatedModel(inner, source, clock, k=1), source, clock=clock)
        report = run_live(session, tmp_path / stop, display=display, record=tmp_path / f"{stop}.mp4")
        assert report.summary["stopped_by"] == stop and report.summary["frames_processed"] == frames
        assert len((tmp_path / f"{stop}.pose.jsonl").read_text().splitlines()) == 1 + frames
        capture = cv2.VideoCapture(str(tmp_path / f"{stop}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames  # one pass per frame: nothing to hold
        capture.release()


def test_cli_live_on_a_video_file(clip, tmp_path, capsys, one_torch_thread):
    video = tmp_path / "walk.mp4"
    h, w = clip.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    paths = write_tiny_checkpoints(tmp_path, ["pose", "seg"], (64, 48))
    base = ["predict", "--checkpoint", str(paths["pose"]), "--checkpoint", str(paths["seg"]), "--input-size",
            "64x48", "--device", "cpu", "--no-progress", "--detector", "none"]
    out = tmp_path / "out"
    rc = main([*base, "--source", str(video), "--live", "--max-frames", "4", "--no-display", "--redetect-every",
               "2", "--record", str(tmp_path / "rec.mp4"), "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "latency capture -> result: p50" in printed
    summary = json.loads((out / "walk.live.json").read_text())
    # the file plays at 30 frames/s: how many frames the model gets to depends on its speed; what it did is exact
    processed = summary["frames_processed"]
    assert 1 <= processed <= 4 and f"processed {processed}," in printed and summary["paced"] is True
    assert summary["stopped_by"] == ("max_frames" if processed == 4 else "end")
    assert summary["frames_read"] == processed + summary["frames_dropped"] <= clip.num_frames
    assert sorted(summary["tasks"]) == ["pose", "seg"]
    lines = (out / "walk.pose.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == processed and all(r["latency_ms"] > 0 for r in records)
    reasons = [r["detect_reason"] for r in records]
    assert reasons[0] == "start" and summary["detector_calls"] == sum(r is not None for r in reasons)
    # with --redetect-every 2 boxes are reused for one frame at most (random weights may also drop confidence)
    assert not any(a is None and b is None for a, b in zip(reasons, reasons[1:]))
    assert set(reasons) <= {"start", "interval", "low_confidence", None}
    assert all(r["box_source"] == "previous_keypoints" for r, why in zip(records, reasons) if why is None)
    assert summary["latency_ms_p50"] > 0 and summary["latency_ms_p95"] >= summary["latency_ms_p50"]
    indices = [r["frame_index"] for r in records]
    capture = cv2.VideoCapture(str(tmp_path / "rec.mp4"))  # each result held for the frames dropped after it
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == indices[-1] - indices[0] + 1
    capture.release()
    for argv, message in [(["--record", "x.mp4"], "only apply with --live"),
                          (["--live", "--source", str(video)], "one source"),
                          (["--live", "--redetect-every", "0"], "--redetect-every")]:
        assert main([*base, "--source", str(video), *argv, "-o", str(out)]) == 2, argv
        assert message in capsys.readouterr().err

