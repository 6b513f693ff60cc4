"""Videos through ``PredictJob`` / ``sapiens2 predict``: the synthetic crossing clip as an mp4, a fake predictor that
returns its true people (with noise), cameras and streams through fake captures, corrupt frames, Ctrl-C, the
pointmap scale, and one end-to-end run of a real tiny-arch pose model."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sapiens2.cli.main import main
from sapiens2.io import discover_inputs
from sapiens2.serving import PredictJob
from sapiens2.serving.runner import SourceItem, VideoOptions
from sapiens2.tasks.results import PointmapResult, PoseResult, Prediction
from sapiens2.video.sources import parse_source
from sapiens2.video.synthetic import crossing_clip
from test_video_sources import FakeCapture

FRAMES = 30


@pytest.fixture(scope="module")
def clip():
    return crossing_clip(FRAMES)


@pytest.fixture(scope="module")
def clip_mp4(clip, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "crossing.mp4"
    h, w = clip.frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (w, h))
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class TruthPredictor:
    """Returns the clip's true people for the frame index it is given (noisy, hidden ones dropped, order
    reversed); with ``pointmap`` a flat pointmap at 3 m whose scale jitters."""

    def __init__(self, clip, *, pointmap: bool = False, batch_size: int = 4):
        self.clip, self.pointmap, self.batch_size = clip, pointmap, batch_size
        self.rng = np.random.default_rng(0)

    def predict(self, request) -> Prediction:
        t = request.frame_index % self.clip.num_frames
        h, w = request.image.shape[:2]
        seen = [p for p in (1, 0) if self.clip.visible[t, p] >= 0.3]
        noise = self.rng.normal(0, 0.8, (len(seen), 308, 2))
        pose = PoseResult(self.clip.boxes[t, seen].reshape(-1, 4), np.ones(len(seen)),
                          (self.clip.keypoints[t, seen] + noise).reshape(-1, 308, 2), np.full((len(seen), 308), 0.9),
                          "detector:fake")
        prediction = Prediction((h, w), pose=pose, timings={"forward": 0.001})
        if self.pointmap:
            scale = 1.0 + self.rng.normal(0, 0.05)
            z = np.full((h, w), 3.0 / scale, np.float32)
            prediction.pointmap = PointmapResult(np.stack([np.zeros_like(z), np.zeros_like(z), z], 2), scale)
        return prediction

    def predict_many(self, requests):
        batch = []
        for request in requests:
            batch.append(request)
            if len(batch) == self.batch_size:
                yield from map(self.predict, batch)
                batch = []
        yield from map(self.predict, batch)


def read_jsonl(path: Path) -> tuple[dict, list[dict]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def nearest_person(clip, t: int, box) -> int:
    centres = (clip.boxes[t, :, :2] + clip.boxes[t, :, 2:]) / 2
    return int(np.argmin(np.linalg.norm(centres - (np.asarray(box[:2]) + box[2:]) / 2, axis=1)))


def test_video_file_tracks_smooths_and_sums_up(tmp_path, clip, clip_mp4):
    job = PredictJob(TruthPredictor(clip), ["pose"], tmp_path / "out", video=VideoOptions(smoothing="light"))
    summary = job.run(discover_inputs(clip_mp4).items)
    assert summary.done == 1 and summary.frames == FRAMES, summary.lines()
    header, records = read_jsonl(tmp_path / "out" / "crossing.pose.jsonl")
    assert header["tracking"] is True and header["smoothing"]["preset"] == "light"
    assert [r["frame_index"] for r in records] == list(range(FRAMES))
    assert records[3]["time_s"] == pytest.approx(3 / clip.fps, abs=1e-6)
    owner: dict[int, set[int]] = {0: set(), 1: set()}
    for t, record in enumerate(records):
        for person in record["people"]:
            owner[nearest_person(clip, t, person["box"])].add(person["track_id"])
            assert len(person["keypoints"]) == len(person["keypoints_raw"]) == 308
    assert owner[0] and owner[1] and len(owner[0]) == len(owner[1]) == 1 and owner[0] != owner[1]
    moved = [np.abs(np.subtract(p["keypoints"], p["keypoints_raw"]))[:, :2].max()
             for r in records[5:] for p in r["people"]]
    assert max(moved) > 0.1  # the smoothed points are not the raw ones
    report = json.loads((tmp_path / "out" / "crossing.summary.json").read_text())
    assert report["frames"] == FRAMES and report["tracks"] == 2 and report["issues"] == []
    assert report["people"] == sum(r["num_people"] for r in records) and report["frames_per_second"] > 0
    assert 0 <= report["model_idle_share"] <= 1 and report["output_fps"] == pytest.approx(clip.fps)
    capture = cv2.VideoCapture(str(tmp_path / "out" / "crossing.pose.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(clip.fps)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 96)
    capture.release()
    assert summary.videos[0].tracks == 2 and "2 track(s)" in "\n".join(summary.lines())


def test_start_end_every_and_no_tracking(tmp_path, clip, clip_mp4):
    job = PredictJob(TruthPredictor(clip), ["pose"], tmp_path / "out", every=2,
                     video=VideoOptions(start="5f", end="0.6", track=False, smoothing="none"))
    assert job.run(discover_inputs(clip_mp4).items).done == 1
    header, records = read_jsonl(tmp_path / "out" / "crossing.pose.jsonl")
    assert [r["frame_index"] for r in records] == [5, 7, 9, 11, 13, 15, 17]  # 0.6 s = frame 18, exclusive
    assert header["start_frame"] == 5 and header["end_frame"] == 18 and header["fps"] == pytest.approx(15.0)
    assert all("track_id" not in p and "keypoints_raw" not in p for r in records for p in r["people"])


def test_camera_through_a_fake_capture(tmp_path, clip):
    camera = FakeCapture(1000, size=(128, 96))
    job = PredictJob(TruthPredictor(clip), ["pose"], tmp_path / "out", open_capture=camera,
                     video=VideoOptions(max_frames=6))
    item = SourceItem(parse_source("0"))
    assert not job.plan([item])[0][2]  # a camera is never "already done"
    summary = job.run([item])
    assert summary.done == 1 and summary.frames == 6 and camera.released
    header, records = read_jsonl(tmp_path / "out" / "camera0.pose.jsonl")
    assert len(records) == 6 and header["image_size"] == {"height": 96, "width": 128}
    assert all(p["track_id"] in (1, 2) for r in records for p in r["people"])
    assert (tmp_path / "out" / "camera0.pose.mp4").is_file()


def test_stream_that_ends_early_and_a_corrupt_frame_are_reported(tmp_path, clip):
    stream = FakeCapture(9, size=(128, 96), fail={4})
    job = PredictJob(TruthPredictor(clip), ["pose"], tmp_path / "out", open_capture=stream)
    summary = job.run([SourceItem(parse_source("rtsp://user:pw@127.0.0.1:8554/cam"))])
    assert summary.done == 1 and summary.frames == 8
    issues = summary.videos[0].issues
    assert issues[0] == "frame 4 could not be read; skipped" and "stopped delivering" in issues[1]
    report = json.loads((tmp_path / "out" / "stream_127_0_0_1_cam.summary.json").read_text())
    assert report["issues"] == issues and "pw" not in report["source"]
    text = "\n".join(summary.lines())
    assert "issue: frame 4 could not be read" in text


def test_ctrl_c_publishes_what_was_processed(tmp_path, clip, clip_mp4):
    camera = FakeCapture(1000, size=(128, 96), interrupt_at=5)
    job = PredictJob(TruthPredictor(clip, batch_size=1), ["pose"], tmp_path / "out", open_capture=camera)
    summary = job.run([SourceItem(parse_source("1")), *discover_inputs(clip_mp4).items])
    assert summary.interrupted and summary.done == 1 and summary.videos[0].interrupted
    _, records = read_jsonl(tmp_path / "out" / "camera1.pose.jsonl")
    assert len(records) == 5
    assert json.loads((tmp_path / "out" / "camera1.summary.json").read_text())["interrupted"] is True
    assert not (tmp_path / "out" / "crossing.pose.jsonl").exists()  # the job stopped after the camera


def test_pointmap_scale_is_smoothed_and_raw_kept(tmp_path, clip, clip_mp4):
    job = PredictJob(TruthPredictor(clip, pointmap=True), ["pose", "pointmap"], tmp_path / "out",
                     video=VideoOptions(smoothing="strong", end="12f"))
    assert job.run(discover_inputs(clip_mp4).items).done == 1
    _, records = read_jsonl(tmp_path / "out" / "crossing.pose.jsonl")
    raw = np.array([r["pointmap_scale"]["raw"] for r in records])
    smooth = np.array([r["pointmap_scale"]["smoothed"] for r in records])
    assert np.var(np.diff(smooth)) * 5 < np.var(np.diff(raw))
    for t in (0, 7):
        pointmap = np.load(tmp_path / "out" / "crossing" / f"{t:06d}.pointmap.npy")
        # files carry the smoothed scale: metric = (3 / raw) * raw / smoothed
        np.testing.assert_allclose(pointmap[..., 2], 3.0 / smooth[t], rtol=1e-4)
    person = records[7]["people"][0]
    assert person["depth_m_raw"] == pytest.approx(3.0 / raw[7], rel=1e-3)
    assert person["depth_m"] != person["depth_m_raw"]


def test_pointmap_without_pose_writes_frames_jsonl(tmp_path, clip, clip_mp4):
    class PointmapOnly(TruthPredictor):
        def predict(self, request):
            prediction = super().predict(request)
            prediction.pose = None
            return prediction

    job = PredictJob(PointmapOnly(clip, pointmap=True), ["pointmap"], tmp_path / "out",
                     video=VideoOptions(max_frames=3, frame_files=False))
    assert job.run(discover_inputs(clip_mp4).items).done == 1
    header, records = read_jsonl(tmp_path / "out" / "crossing.frames.jsonl")
    assert header["format"] == "sapiens2.frames.video" and len(records) == 3
    assert set(records[0]) == {"frame_index", "time_s", "pointmap_scale"}
    assert not (tmp_path / "out" / "crossing").exists()  # --no-frame-files


@pytest.fixture(scope="module")
def tiny_pose(tmp_path_factory) -> Path:
    from sapiens2.models.task_model import build_model

    torch.manual_seed(0)
    model = build_model("pose", "sapiens2_tiny", img_size=(64, 48))
    path = tmp_path_factory.mktemp("ckpt") / "tiny_pose.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_cli_with_a_real_tiny_model_on_the_clip(tmp_path, clip_mp4, tiny_pose, capsys):
    rc = main(["predict", "--checkpoint", str(tiny_pose), "--input-size", "64x48", "--device", "cpu",
               "--no-progress", "--detector", "none", "--smooth", "strong", "--end", "10f", str(clip_mp4),
               "-o", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "video " in printed and "1 track(s)" in printed
    header, records = read_jsonl(tmp_path / "out" / "crossing.pose.jsonl")
    assert len(records) == 10 and header["smoothing"]["preset"] == "strong"
    assert all([p["track_id"] for p in r["people"]] == [1] for r in records)  # the whole image: one track
    raw = np.array([r["people"][0]["keypoints_raw"] for r in records])[..., :2]
    smooth = np.array([r["people"][0]["keypoints"] for r in records])[..., :2]
    assert np.isfinite(smooth).all()
    confident = np.array([r["people"][0]["keypoints_raw"] for r in records])[..., 2] >= 0.3
    both = confident[1:] & confident[:-1]
    # random weights, fixed seed: most points score >= 0.3 (only those are filtered, the rest are held)
    assert both.sum() > 20
    assert np.abs(np.diff(smooth, axis=0))[both].mean() < np.abs(np.diff(raw, axis=0))[both].mean()


def test_cli_source_folder_and_usage_errors(tmp_path, clip, tiny_pose, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), cv2.cvtColor(clip.frames[i], cv2.COLOR_RGB2BGR))
    base = ["predict", "--checkpoint", str(tiny_pose), "--input-size", "64x48", "--device", "cpu", "--no-progress",
            "--detector", "none"]
    assert main([*base, "--source", str(frames), "--fps", "8", "-o", str(tmp_path / "out")]) == 0
    header, records = read_jsonl(tmp_path / "out" / "frames.pose.jsonl")
    assert header["fps"] == 8.0 and [r["time_s"] for r in records] == [0.0, 0.125, 0.25, 0.375]
    capsys.readouterr()
    for argv, message in [(["--source", "ftp://127.0.0.1/x"], "scheme"), (["--start", "soon"], "--start"),
                          (["--max-frames", "0"], "--max-frames"), ([], "INPUT")]:
        extra = [] if argv and argv[0] == "--source" else (["--source", str(frames)] if argv else [])
        assert main([*base, *argv, *extra, "-o", str(tmp_path / "o2")]) == 2, argv
        assert message in capsys.readouterr().err
