"""The batch/video job (sapiens2.serving.runner) with a fake predictor: skip/resume, bad inputs, batch-failure
isolation, streaming video outputs. The real model runs in tests/test_cli_predict.py."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sapiens2.io import discover_inputs
from sapiens2.serving import OutputOptions, PredictJob
from sapiens2.tasks.results import PoseResult, Prediction, SegResult

POISON = 13  # an image whose pixels are all this value makes the fake model fail


class FakePredictor:
    """Seg = pixels brighter than 128 are class 1; pose = one person at the image centre. Batches of 3."""

    def __init__(self, batch_size: int = 3):
        self.batch_size = batch_size
        self.seen = 0

    def _one(self, image) -> Prediction:
        image = image.image  # a PredictInput
        rgb = getattr(image, "rgb", image)
        if (rgb == POISON).all():
            raise RuntimeError("poisoned image")
        self.seen += 1
        h, w = rgb.shape[:2]
        keypoints = np.full((1, 308, 2), [w / 2, h / 2], np.float32)
        return Prediction(image_size=(h, w), seg=SegResult(mask=(rgb[..., 0] > 128).astype(np.uint8)),
                          pose=PoseResult(np.array([[0, 0, w - 1, h - 1]], np.float32), np.ones(1, np.float32),
                                          keypoints, np.full((1, 308), 0.9, np.float32), "whole_image"),
                          timings={"pre": 0.001, "forward": 0.002, "post": 0.001})

    def predict(self, image) -> Prediction:
        return self._one(image)

    def predict_many(self, images):
        batch = []
        for image in images:
            batch.append(image)
            if len(batch) == self.batch_size:
                yield from [self._one(b) for b in batch]  # one bad image fails its whole batch
                batch = []
        yield from [self._one(b) for b in batch]


def write_images(folder: Path, n: int, size=(24, 20)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = np.full((*size, 3), 40 * i % 256, np.uint8)
        image[:, : size[1] // 2] = 200
        paths.append(folder / f"img{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def test_bad_files_and_a_failing_batch_only_fail_themselves(tmp_path):
    write_images(tmp_path / "in", 7)
    cv2.imwrite(str(tmp_path / "in" / "img3.png"), np.full((24, 20, 3), POISON, np.uint8))
    (tmp_path / "in" / "text.jpg").write_text("not an image")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    found = discover_inputs(tmp_path / "in")
    predictor = FakePredictor()
    summary = PredictJob(predictor, ["seg"], tmp_path / "out").run(found.items)
    reasons = {f.path.name: f.reason for f in summary.failed}
    assert set(reasons) == {"img3.png", "text.jpg", "empty.png"}
    assert "poisoned" in reasons["img3.png"] and "empty" in reasons["empty.png"]
    assert "not an image" in reasons["text.jpg"]
    assert summary.done == 6 and summary.images == 6 and summary.total == 9
    for i in (0, 1, 2, 4, 5, 6):  # the poisoned image's batch-mates were retried and written
        seg = cv2.imread(str(tmp_path / "out" / f"img{i}.seg.png"), cv2.IMREAD_UNCHANGED)
        assert seg.shape == (24, 20) and (seg[:, :10] == 1).all()
    assert not (tmp_path / "out" / "img3.seg.png").exists()
    assert abs(summary.stage_s["forward"] - 6 * 0.002) < 1e-9


def test_rerun_skips_done_inputs_and_overwrite_redoes(tmp_path):
    write_images(tmp_path / "in", 3)
    items = discover_inputs(tmp_path / "in").items
    first = PredictJob(FakePredictor(), ["pose", "seg"], tmp_path / "out").run(items)
    assert first.done == 3 and first.people == 3
    out = tmp_path / "out" / "img1.pose.json"
    mtime = out.stat().st_mtime_ns
    predictor = FakePredictor()
    again = PredictJob(predictor, ["pose", "seg"], tmp_path / "out").run(items)
    assert again.skipped == 3 and again.done == 0 and predictor.seen == 0 and out.stat().st_mtime_ns == mtime
    (tmp_path / "out" / "img2.seg_vis.png").unlink()  # an incomplete input is redone
    partial = PredictJob(predictor, ["pose", "seg"], tmp_path / "out").run(items)
    assert partial.skipped == 2 and partial.done == 1 and predictor.seen == 1
    # asking for one more output (seg probabilities) makes the inputs incomplete again
    redo = PredictJob(FakePredictor(), ["seg"], tmp_path / "out", overwrite=True).run(items)
    assert redo.done == 3 and redo.skipped == 0


def test_video_streams_frames_and_writes_per_task_videos(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for i in range(7):
        writer.write(np.full((24, 32, 3), 30 * i, np.uint8))
    writer.release()
    items = discover_inputs(path).items
    summary = PredictJob(FakePredictor(), ["pose", "seg"], tmp_path / "out", every=2).run(items)
    assert summary.done == 1 and summary.frames == 4, summary.lines()
    lines = (tmp_path / "out" / "clip.pose.jsonl").read_text().splitlines()
    header, frames = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert header["format"] == "sapiens2.pose.video" and header["fps"] == 5.0 and header["every"] == 2
    assert [f["frame_index"] for f in frames] == [0, 2, 4, 6] and frames[1]["time_s"] == 0.2
    assert all(len(f["people"][0]["keypoints"]) == 308 for f in frames)
    assert sorted(p.name for p in (tmp_path / "out" / "clip").iterdir()) == [
        f"{i:06d}.seg.png" for i in (0, 2, 4, 6)] + ["seg_classes.json"]
    from sapiens2.visualization import legend_width

    for task, width in (("pose", 32), ("seg", 32 + legend_width(24))):  # seg: the class legend on the right
        capture = cv2.VideoCapture(str(tmp_path / "out" / f"clip.{task}.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (width, 24)
        capture.release()
    again = PredictJob(FakePredictor(), ["pose", "seg"], tmp_path / "out", every=2).run(items)
    assert again.skipped == 1
    other = PredictJob(FakePredictor(), ["pose", "seg"], tmp_path / "out", every=3).run(items)  # other frames
    assert other.skipped == 0 and other.done == 1 and other.frames == 3


class FailsOnSecondFrame(FakePredictor):
    def _one(self, image) -> Prediction:
        if self.seen == 1:
            raise RuntimeError("model crashed")
        return super()._one(image)


def test_failing_video_publishes_nothing(tmp_path):
    path = tmp_path / "bad.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for value in (50, 60, 70):
        writer.write(np.full((24, 32, 3), value, np.uint8))
    writer.release()
    (tmp_path / "empty.mp4").write_bytes(b"")
    summary = PredictJob(FailsOnSecondFrame(batch_size=1), ["pose", "seg"], tmp_path / "out",
                         options=OutputOptions()).run(discover_inputs(tmp_path).items)
    reasons = {f.path.name: f.reason for f in summary.failed}
    assert "empty" in reasons["empty.mp4"] and "model crashed" in reasons["bad.mp4"]
    assert summary.done == 0
    assert not (tmp_path / "out" / "bad.seg.mp4").exists() and not (tmp_path / "out" / "bad.pose.jsonl").exists()
    assert not list((tmp_path / "out").rglob(".*s2tmp*"))


class StopsAfterTwoFrames(FakePredictor):
    def _one(self, image) -> Prediction:
        if self.seen == 2:
            raise KeyboardInterrupt  # Ctrl-C during a video
        return super()._one(image)


def write_clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 24))
    for i in range(frames):
        writer.write(np.full((24, 32, 3), 20 * i, np.uint8))
    writer.release()
    return path


def test_an_interrupted_video_is_redone_on_the_next_run(tmp_path):
    items = discover_inputs(write_clip(tmp_path / "clip.mp4", 6)).items
    stopped = PredictJob(StopsAfterTwoFrames(batch_size=1), ["pose"], tmp_path / "out").run(items)
    assert stopped.interrupted and stopped.frames == 2
    assert json.loads((tmp_path / "out" / "clip.summary.json").read_text())["interrupted"] is True
    assert not (tmp_path / "out" / "clip.done.json").exists()
    again = PredictJob(FakePredictor(), ["pose"], tmp_path / "out").run(items)
    assert again.skipped == 0 and again.done == 1 and again.frames == 6
    assert PredictJob(FakePredictor(), ["pose"], tmp_path / "out").run(items).skipped == 1


def test_resume_needs_a_matching_completion_record(tmp_path):
    write_images(tmp_path / "in", 2)
    items = discover_inputs(tmp_path / "in").items
    settings = {"models": {"seg": "a"}}
    assert PredictJob(FakePredictor(), ["seg"], tmp_path / "out", settings=settings).run(items).done == 2
    record = json.loads((tmp_path / "out" / "img0.done.json").read_text())
    assert record["outputs"] == ["img0.seg.png", "img0.seg_vis.png"] and record["settings"]["models"] == {"seg": "a"}
    assert PredictJob(FakePredictor(), ["seg"], tmp_path / "out", settings=settings).run(items).skipped == 2
    other = PredictJob(FakePredictor(), ["seg"], tmp_path / "out", settings={"models": {"seg": "b"}}).run(items)
    assert other.done == 2  # another model
    again = PredictJob(FakePredictor(), ["seg"], tmp_path / "out", settings={"models": {"seg": "b"}})
    (tmp_path / "out" / "img1.done.json").unlink()  # outputs without a record (older version, crashed redo)
    assert again.run(items).done == 1
    cv2.imwrite(str(tmp_path / "in" / "img0.png"), np.zeros((30, 20, 3), np.uint8))  # a changed input
    assert again.run(items).done == 1
    assert again.run(items).skipped == 2


class BoxesFail:
    def __init__(self, bad: str):
        self.bad = bad

    def __call__(self, item):
        if item.path.name == self.bad:
            raise ValueError("broken boxes file")
        return None


def test_a_failure_while_feeding_the_model_fails_that_input_only(tmp_path):
    write_images(tmp_path / "in", 5)
    items = discover_inputs(tmp_path / "in").items
    summary = PredictJob(FakePredictor(batch_size=2), ["seg"], tmp_path / "out",
                         boxes_for=BoxesFail("img1.png")).run(items)
    assert [f.path.name for f in summary.failed] == ["img1.png"] and "broken boxes" in summary.failed[0].reason
    assert summary.done == 4 and summary.total == 5
    assert sorted(p.name for p in (tmp_path / "out").glob("*.seg.png")) == [f"img{i}.seg.png" for i in (0, 2, 3, 4)]


class YieldsFailures(FakePredictor):
    """Like sapiens2's Predictor: a failed input comes back as a Prediction with ``error`` set."""

    def predict_many(self, images):
        for image in images:
            try:
                yield self._one(image)
            except RuntimeError as exc:
                yield Prediction(image_size=(0, 0), error=exc)


def test_failed_predictions_fail_their_input(tmp_path):
    write_images(tmp_path / "in", 3)
    cv2.imwrite(str(tmp_path / "in" / "img1.png"), np.full((24, 20, 3), POISON, np.uint8))
    summary = PredictJob(YieldsFailures(), ["seg"], tmp_path / "out").run(discover_inputs(tmp_path / "in").items)
    assert [f.path.name for f in summary.failed] == ["img1.png"] and "poisoned" in summary.failed[0].reason
    assert summary.done == 2 and not (tmp_path / "out" / "img1.seg.png").exists()
    assert not (tmp_path / "out" / "img1.done.json").exists()


class FindsNobody(FakePredictor):
    def _one(self, image) -> Prediction:
        prediction = super()._one(image)
        prediction.pose.whole_image_fallback = True
        return prediction


def test_whole_image_fallbacks_are_counted_apart_and_warned_once(tmp_path, caplog):
    write_images(tmp_path / "in", 2)
    write_clip(tmp_path / "in" / "clip.mp4", 3)
    with caplog.at_level("WARNING"):
        summary = PredictJob(FindsNobody(), ["pose"], tmp_path / "out").run(discover_inputs(tmp_path / "in").items)
    assert summary.done == 3 and summary.people == 0 and summary.whole_image_fallbacks == 5
    assert "people found: 0; no person found, whole image used: 5" in summary.lines()[1]
    assert len([r for r in caplog.records if "whole image" in r.getMessage()]) == 1


def test_any_error_opening_a_video_fails_that_video_only(tmp_path):
    (tmp_path / "in").mkdir()
    write_clip(tmp_path / "in" / "a.mp4", 2)
    write_clip(tmp_path / "in" / "b.mp4", 2)

    def open_capture(target):
        if str(target).endswith("a.mp4"):
            raise OSError("device busy")  # not a VideoReadError: used to end the whole job
        return cv2.VideoCapture(str(target))

    summary = PredictJob(FakePredictor(), ["pose"], tmp_path / "out", open_capture=open_capture,
                         progress=False).run(discover_inputs(tmp_path / "in").items)
    assert [f.path.name for f in summary.failed] == ["a.mp4"] and "device busy" in summary.failed[0].reason
    assert summary.done == 1 and (tmp_path / "out" / "b.pose.jsonl").is_file()
