"""The command lines README.md promises, run as a user runs them (tiny random-weight models, small inputs): each test
fails if the option or path it names were ignored or broken."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open

from sapiens2.cli.main import main
from sapiens2.data.synth import write_dataset
from sapiens2.tasks.detection import hog_available
from sapiens2.inference.predictor import ModelRunner
from sapiens2.training.logging import read_metrics_csv
from test_cli_predict import FAST, checkpoints, ckpt_args, run_cli, write_image, write_video  # noqa: F401 (fixture)
from test_detection import stick_figure

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), num=8, seed=3, height=128, width=96, max_people=1,
                         progress=False)


def pose_doc(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- predict: person boxes -----------------------------------------------------------------------------------

class _BrightBoxDetector(torch.nn.Module):
    """A 'detector' in the YOLOv8 export layout (1, 4 + C, N) for a 64x64 input: anchor 0 is a person box around the
    bright pixels, anchor 1 a class-1 box over most of the input (must be ignored), anchor 2 a person box scoring
    below the threshold (must be dropped), then empty anchors."""

    def __init__(self):
        super().__init__()
        self.register_buffer("index", torch.arange(64, dtype=torch.float32))
        self.register_buffer("person_scores", torch.tensor([0.9, 0.05]))
        others = torch.zeros(7, 6)  # N = 8 anchors: more anchors than 4 + C rows, as in every real export
        others[:2] = torch.tensor([[32, 32, 58, 58, 0.1, 0.8], [32, 32, 10, 10, 0.2, 0.0]])
        self.register_buffer("others", others)

    def forward(self, x):
        bright = (x[:, 0] > 0.7).float()  # letterbox padding is 114/255 = 0.45, the test's figure is white
        rows, cols = bright.amax(dim=2)[0], bright.amax(dim=1)[0]
        y1, y2 = torch.where(rows > 0, self.index, 64.0).min(), torch.where(rows > 0, self.index, -1.0).max() + 1
        x1, x2 = torch.where(cols > 0, self.index, 64.0).min(), torch.where(cols > 0, self.index, -1.0).max() + 1
        person = torch.cat([torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]), self.person_scores])
        return torch.cat([person[None], self.others]).T[None]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its retirement
def test_onnx_detector_boxes_drive_pose(tmp_path, checkpoints):
    pytest.importorskip("onnx")  # the TorchScript exporter writes through it
    ort = pytest.importorskip("onnxruntime")
    det = tmp_path / "det.onnx"
    torch.onnx.export(_BrightBoxDetector(), (torch.zeros(1, 3, 64, 64),), str(det), input_names=["images"],
                      output_names=["output0"], dynamo=False)
    assert [o.shape for o in ort.InferenceSession(str(det)).get_outputs()] == [[1, 6, 8]]
    img = np.zeros((120, 160, 3), np.uint8)
    img[20:100, 50:90] = 255  # the "person": x 50..89, y 20..99
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "p.png"), img)
    rc = run_cli(*ckpt_args(checkpoints, ["pose"]), *FAST[:-2], "--detector", f"onnx:{det}", tmp_path / "in",
                 "-o", tmp_path / "out")
    assert rc == 0
    doc = pose_doc(tmp_path / "out" / "p.pose.json")
    assert doc["box_source"] == "detector:onnx" and doc["num_people"] == 1
    person = doc["people"][0]
    # letterbox 160x120 -> 64x48 (+ pad): one input pixel is 2.5 image pixels
    np.testing.assert_allclose(person["box"], [50, 20, 90, 100], atol=3)
    assert person["box_score"] == pytest.approx(0.9, abs=1e-6)


@pytest.mark.skipif(not hog_available(), reason="this OpenCV build has no HOGDescriptor")
def test_hog_on_the_example_photo_and_on_standing_figures(tmp_path, checkpoints):
    """README: HOG finds only upright full-body people. The example photo is a half-body portrait: HOG finds nobody
    there and pose falls back to the whole image, recorded as such; standing figures are found and recorded as HOG's."""
    shutil.copy(ASTRONAUT, tmp_path / "astronaut.jpg")
    figures = np.full((480, 640, 3), 200, np.uint8)
    stick_figure(figures, 200, 100, 1.5)
    cv2.imwrite(str(tmp_path / "figures.png"), cv2.GaussianBlur(figures, (5, 5), 0))
    rc = run_cli(*ckpt_args(checkpoints, ["pose"]), *FAST[:-2], "--detector", "hog", tmp_path / "astronaut.jpg",
                 tmp_path / "figures.png", "-o", tmp_path / "out")
    assert rc == 0
    astronaut = pose_doc(tmp_path / "out" / "astronaut.pose.json")
    assert "whole_image" in astronaut["box_source"] and astronaut["num_people"] == 1
    assert astronaut["people"][0]["box"] == [0, 0, 511, 511]
    found = pose_doc(tmp_path / "out" / "figures.pose.json")
    assert found["box_source"] == "detector:hog" and found["num_people"] == 1
    x1, y1, x2, y2 = found["people"][0]["box"]
    assert abs((x1 + x2) / 2 - 200) < 15 and abs((y1 + y2) / 2 - 235) < 15  # the figure, not the whole image


# ---- predict: --batch-size, --dtype, --flip-test --------------------------------------------------------------

def test_batch_size_dtype_and_flip_test_take_effect(tmp_path, checkpoints, monkeypatch):
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", 40, 30, seed=i)
    batches = []
    forward = ModelRunner.forward

    def spy(self, batch):  # what the model is actually given
        batches.append(int(batch.shape[0]))
        return forward(self, batch)

    monkeypatch.setattr(ModelRunner, "forward", spy)

    def run(name, *extra, tasks=("seg",)):
        batches.clear()
        assert run_cli(*ckpt_args(checkpoints, tasks), *FAST, "--seg-probs", *extra, tmp_path / "in",
                       "-o", tmp_path / name) == 0
        return list(batches)

    assert run("base") == [3]  # default batch size 4
    assert run("b2", "--batch-size", "2") == [2, 1]
    run("bf16", "--dtype", "bfloat16")
    for i in range(3):
        base = np.load(tmp_path / "base" / f"{i}.seg_probs.npy").astype(np.float32)
        np.testing.assert_allclose(np.load(tmp_path / "b2" / f"{i}.seg_probs.npy").astype(np.float32), base,
                                   atol=2e-3)  # batching does not change results
        diff = np.abs(np.load(tmp_path / "bf16" / f"{i}.seg_probs.npy").astype(np.float32) - base)
        assert 0 < diff.max() < 0.2  # bfloat16 autocast ran: close, not equal
    run("pose", tasks=("pose",))
    run("flip", "--flip-test", tasks=("pose",))
    for i in range(3):
        plain = np.array(pose_doc(tmp_path / "pose" / f"{i}.pose.json")["people"][0]["keypoints"])
        flipped = np.array(pose_doc(tmp_path / "flip" / f"{i}.pose.json")["people"][0]["keypoints"])
        assert np.isfinite(flipped).all() and np.abs(flipped - plain).max() > 1e-3


# ---- predict: video options ----------------------------------------------------------------------------------

def test_video_start_end_max_frames_and_no_track(tmp_path, checkpoints):
    clip = write_video(tmp_path / "clip.mp4", 10)  # 10 fps
    base = [*ckpt_args(checkpoints, ["pose"]), *FAST, "--no-frame-files", clip]

    def frames(name):
        lines = (tmp_path / name / "clip.pose.jsonl").read_text().splitlines()
        return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]

    assert run_cli(*base, "--start", "0.2", "--end", "6f", "--no-track", "-o", tmp_path / "a") == 0
    header, records = frames("a")
    assert [r["frame_index"] for r in records] == [2, 3, 4, 5]  # 0.2 s at 10 fps = frame 2; the end is exclusive
    assert header["tracking"] is False
    assert all("track_id" not in p for r in records for p in r["people"])
    assert run_cli(*base, "--max-frames", "3", "-o", tmp_path / "b") == 0
    header, records = frames("b")
    assert [r["frame_index"] for r in records] == [0, 1, 2]
    assert header["tracking"] is True and all(p["track_id"] == 1 for r in records for p in r["people"])


# ---- synth, train, eval --------------------------------------------------------------------------------------

def test_synth_workers_write_the_same_data_as_one_process(tmp_path, capsys, monkeypatch):
    """``synth --num N --workers W`` (README) and the default (one process per usable core) give the same data as
    one process: same seed, same data."""
    import sapiens2.data.synth.writer as writer

    used, write = [], writer.write_dataset

    def spy(*args, **kwargs):
        used.append(kwargs["workers"])
        return write(*args, **kwargs)

    monkeypatch.setattr(writer, "write_dataset", spy)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    common = ["synth", "--num", "6", "--height", "64", "--width", "48", "--seed", "4", "--no-progress"]
    assert main([*common, "--workers", "2", "-o", str(tmp_path / "w2")]) == 0
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    assert main([*common, "--workers", "1", "-o", str(tmp_path / "w1")]) == 0
    assert used == [2, 3, 1]
    assert "wrote 6 samples" in capsys.readouterr().out
    files = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*") if p.is_file())
    assert len([f for f in files if f.parts[0] == "images"]) == 6
    for other in ("w2", "default"):
        assert files == sorted(p.relative_to(tmp_path / other) for p in (tmp_path / other).rglob("*") if p.is_file())
        for f in files:
            assert (tmp_path / "w1" / f).read_bytes() == (tmp_path / other / f).read_bytes(), f


def _train(data, out, *extra) -> int:
    return main(["train", "--task", "seg", "--data", str(data), "--model", "sapiens2_tiny", "--iters", "5",
                 "--batch-size", "2", "--device", "cpu", "--no-progress", "-o", str(out),
                 "--set", "data.input_size=[64,48]", "--set", "save_every=2", "--set", "optim.warmup_iters=1",
                 "--set", "log_every=1",
                 *extra])


def test_cli_resume_after_an_interruption_matches_the_uninterrupted_run(synth, tmp_path, monkeypatch, capsys):
    """Ctrl-C during step 4 (last checkpoint: step 2), then ``--resume``: the same weights as a run never stopped.
    The interrupted run loads data with 2 worker processes, the reference in-process: the batches must agree."""
    assert _train(synth, tmp_path / "full", "--set", "data.num_workers=0") == 0
    import sapiens2.training.trainer as trainer_mod

    make_targets, calls = trainer_mod.make_targets, []

    def interrupt_at_step_4(*args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return make_targets(*args)

    workers = ("--set", "data.num_workers=2")
    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "make_targets", interrupt_at_step_4)
        with pytest.raises(KeyboardInterrupt):
            _train(synth, tmp_path / "cut", *workers)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_00000002"]
    capsys.readouterr()
    assert _train(synth, tmp_path / "cut", *workers, "--resume") == 0
    assert "trained seg for steps 3..5" in capsys.readouterr().out  # continued, not restarted
    steps = [s for s, n, _ in read_metrics_csv(tmp_path / "cut" / "metrics.csv") if n == "train/loss"]
    assert steps == [1, 2, 3, 4, 5]  # step 3 was logged before the interruption and redone once
    full = [v for _, n, v in read_metrics_csv(tmp_path / "full" / "metrics.csv") if n == "train/loss"]
    resumed = [v for _, n, v in read_metrics_csv(tmp_path / "cut" / "metrics.csv") if n == "train/loss"]
    assert resumed == full
    with safe_open(str(tmp_path / "full" / "model.safetensors"), "pt") as a, \
            safe_open(str(tmp_path / "cut" / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_pose_training_from_a_coco_keypoint_json(synth, tmp_path, capsys):
    """README: ``train --task pose --data person_keypoints.json --set data.image_root=images/``: a plain COCO file
    kept apart from its images."""
    coco = json.loads((synth / "annotations.json").read_text())
    plain = {"images": [{k: im[k] for k in ("id", "file_name", "height", "width")} for im in coco["images"]],
             "annotations": [{k: a[k] for k in ("id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox",
                                                "area", "iscrowd") if k in a} for a in coco["annotations"]],
             "categories": coco["categories"]}
    ann = tmp_path / "labels" / "person_keypoints.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(plain))
    args = ["train", "--task", "pose", "--data", str(ann), "--model", "sapiens2_tiny", "--iters", "2",
            "--batch-size", "2", "--device", "cpu", "--no-progress", "--set", "data.input_size=[64,48]",
            "--set", "data.num_workers=0"]
    # without image_root the file names resolve next to the JSON, where there are no images
    assert main([*args, "-o", str(tmp_path / "bad")]) != 0
    capsys.readouterr()
    assert main([*args, "--set", f"data.image_root={synth}", "-o", str(tmp_path / "run")]) == 0
    assert "trained pose for steps 1..2" in capsys.readouterr().out
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        assert f.metadata()["task"] == "pose"
        assert f.get_tensor("decode_head.conv_pose.weight").shape[0] == 308


@pytest.mark.parametrize("task", ["seg", "pose"])
def test_cli_eval_writes_metrics(task, synth, checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # README: "table + eval_seg.json" in the current folder
    rc = main(["eval", "--task", task, "--data", str(synth), "--checkpoint", str(checkpoints[task]),
               "--input-size", "64", "48", "--device", "cpu", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / f"eval_{task}.json"
    saved = json.loads(out.read_text())
    assert saved["task"] == task and saved["items"] == len(json.loads((synth / "annotations.json").read_text())[
        "annotations" if task == "pose" else "images"])
    numbers = {k: v for k, v in saved["metrics"].items() if isinstance(v, (int, float))}
    assert numbers and all(np.isfinite(v) for v in numbers.values())
