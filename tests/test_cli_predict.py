"""``sapiens2 predict`` end to end with tiny random-weight checkpoints written by the tests (fast: tiny arch,
64x48 model input, images of a few dozen pixels)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import write_tiny_checkpoints

from sapiens2.cli.main import main
from sapiens2.models.task_model import build_model

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting")
INPUT_SIZE = (64, 48)
POINTMAP_SIZE = (256, 192)
FAST = ["--input-size", "64x48", "--device", "cpu", "--no-progress", "--detector", "none"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    # the tiny pointmap head's scale branch needs at least a 16x12 feature grid
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"), TASKS,
                                  lambda task: POINTMAP_SIZE if task == "pointmap" else INPUT_SIZE)


def ckpt_args(checkpoints, tasks=TASKS, named=True) -> list[str]:
    args = []
    for task in tasks:
        args += ["--checkpoint", f"{task}={checkpoints[task]}" if named else str(checkpoints[task])]
    return args


def write_image(path: Path, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return path


def write_video(path: Path, frames: int, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    return path


def mp4_frames(path: Path) -> tuple[int, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


def ply_vertices(path: Path) -> int:
    data = path.read_bytes()
    header = data[: data.index(b"end_header\n")].decode("ascii")
    count = int(next(line.split()[-1] for line in header.splitlines() if line.startswith("element vertex")))
    assert len(data) - len(header) - len("end_header\n") == count * 15  # 3 float32 + 3 uint8 per vertex
    return count


def run_cli(*args: str | Path) -> int:
    return main(["predict", *map(str, args)])


def test_every_task_on_images_a_folder_and_a_video(tmp_path, checkpoints, capsys):
    write_image(tmp_path / "in" / "a.jpg", 40, 30, seed=1)
    write_image(tmp_path / "in" / "deep" / "b.png", 50, 64, seed=2)
    single = write_image(tmp_path / "c.png", 33, 21, seed=3)
    video = write_video(tmp_path / "clip.mp4", 5)
    tasks = [t for t in TASKS if t != "pointmap"]
    out = tmp_path / "out"
    rc = run_cli(*ckpt_args(checkpoints, tasks, named=False), *FAST, "--seg-probs", "--every", "2",
                 tmp_path / "in", single, video, "-o", out)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "inputs: 4 (4 done, 0 skipped, 0 failed)" in printed and "3 video frame(s)" in printed

    for base, (h, w) in {"a": (40, 30), "deep/b": (50, 64), "c": (33, 21)}.items():
        doc = json.loads((out / f"{base}.pose.json").read_text())
        assert doc["image_size"] == {"height": h, "width": w} and doc["model"] == "tiny_pose.safetensors"
        assert doc["box_source"] == "whole_image" and doc["num_people"] == 1
        person = doc["people"][0]
        assert person["box"] == [0, 0, w - 1, h - 1]  # the whole image, pixel centres
        kp = np.array(person["keypoints"])
        assert kp.shape == (308, 3) and np.isfinite(kp).all()
        assert [len(person[v]) for v in ("coco17", "coco_wholebody133", "openpose_body25", "openpose_hand21_left",
                                         "openpose_hand21_right", "openpose_face70")] == [17, 133, 25, 21, 21, 70]
        assert cv2.imread(str(out / f"{base}.pose.png")).shape == (h, w, 3)
        seg = cv2.imread(str(out / f"{base}.seg.png"), cv2.IMREAD_UNCHANGED)
        assert seg.dtype == np.uint8 and seg.shape == (h, w) and seg.max() < 29
        probs = np.load(out / f"{base}.seg_probs.npy")
        assert probs.dtype == np.float16 and probs.shape == (29, h, w)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=0.03)
        normals = np.load(out / f"{base}.normal.npy")
        assert normals.dtype == np.float32 and normals.shape == (h, w, 3)
        norm = np.linalg.norm(normals, axis=2)
        fg = seg > 0  # seg runs too, so the background is blanked (0)
        assert np.allclose(norm[fg], 1.0, atol=1e-3) and (norm[~fg] == 0).all()
        assert cv2.imread(str(out / f"{base}.normal.png")).shape == (h, w, 3)
        assert cv2.imread(str(out / f"{base}.albedo.png")).shape == (h, w, 3)
        alpha = cv2.imread(str(out / f"{base}.alpha.png"), cv2.IMREAD_UNCHANGED)
        assert alpha.dtype == np.uint8 and alpha.shape == (h, w)
        cutout = cv2.imread(str(out / f"{base}.cutout.png"), cv2.IMREAD_UNCHANGED)
        assert cutout.shape == (h, w, 4)
        np.testing.assert_array_equal(cutout[..., 3], alpha)

    lines = (out / "clip.pose.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "sapiens2.pose.video" and len(header["keypoint_names"]) == 308
    assert header["image_size"] == {"height": 30, "width": 40} and header["fps"] == 5.0
    frames = [json.loads(line) for line in lines[1:]]
    assert [f["frame_index"] for f in frames] == [0, 2, 4]
    assert all(len(f["people"][0]["keypoints"]) == 308 for f in frames)
    from sapiens2.visualization import legend_width

    for task in tasks:  # the seg video carries the class legend on the right
        width = 40 + (legend_width(30) if task == "seg" else 0)
        assert mp4_frames(out / f"clip.{task}.mp4") == (3, (30, width + width % 2))
    per_frame = sorted(p.name for p in (out / "clip").iterdir())
    assert per_frame == sorted(["seg_classes.json"] + [f"{i:06d}{s}" for i in (0, 2, 4) for s in (
        ".seg.png", ".seg_probs.npy", ".normal.npy", ".albedo.png", ".alpha.png", ".cutout.png")])
    assert cv2.imread(str(out / "clip" / "000002.seg.png"), cv2.IMREAD_UNCHANGED).shape == (30, 40)
    assert not list(out.rglob(".*s2tmp*"))


def test_pointmap_files(tmp_path, checkpoints):
    write_image(tmp_path / "p.jpg", 36, 28)
    out = tmp_path / "out"
    rc = run_cli("--checkpoint", checkpoints["pointmap"], "--input-size", "256x192", "--device", "cpu",
                 "--no-progress", tmp_path / "p.jpg", "-o", out)
    assert rc == 0
    pointmap = np.load(out / "p.pointmap.npy")
    assert pointmap.dtype == np.float32 and pointmap.shape == (36, 28, 3) and np.isfinite(pointmap).all()
    depth = cv2.imread(str(out / "p.depth.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (36, 28)
    z = pointmap[..., 2]
    valid = z > 0
    np.testing.assert_array_equal(depth > 0, valid)  # 0 = no data (behind the camera here: random weights)
    np.testing.assert_array_equal(depth[valid], np.clip(np.rint(z[valid] * 1000), 1, 65535))
    assert ply_vertices(out / "p.ply") == valid.sum()  # no seg mask: every valid pixel
    assert cv2.imread(str(out / "p.depth_vis.png")).shape == (36, 28, 3)


def bad_inputs(folder: Path) -> dict[str, str]:
    """name -> the reason we expect in the report."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, jpeg = cv2.imencode(".jpg", np.full((30, 20, 3), 128, np.uint8))
    (folder / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (folder / "text.jpg").write_text("hello, I am not a picture")
    (folder / "zero.png").write_bytes(b"")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(b"\x00" * 64 + b"definitely not a video" * 10)
    return {"truncated.jpg": "truncated", "text.jpg": "not an image", "zero.png": "empty",
            "empty.mp4": "empty", "garbage.mp4": "video"}


def test_bad_inputs_are_reported_and_skipped(tmp_path, checkpoints, capsys):
    expected = bad_inputs(tmp_path / "in")
    write_image(tmp_path / "in" / "good.png", 30, 20)
    (tmp_path / "notes").mkdir()  # a folder holding no image or video: a failed input, not a silent nothing
    (tmp_path / "notes" / "readme.txt").write_text("no pictures here")
    rc = run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "in", tmp_path / "missing.jpg",
                 tmp_path / "notes", "-o", tmp_path / "out")
    captured = capsys.readouterr()
    assert rc == 0
    assert "inputs: 8 (1 done, 0 skipped, 7 failed)" in captured.out
    failed = {line.strip().split(": ", 1)[0]: line for line in captured.out.splitlines() if line.startswith("  ")}
    for name, reason in expected.items():
        line = failed[str(tmp_path / "in" / name)]
        assert reason in line.lower(), line
    assert "does not exist" in failed[str(tmp_path / "missing.jpg")]
    assert f"no images or videos found in {tmp_path / 'notes'}" in failed[str(tmp_path / "notes")]
    assert (tmp_path / "out" / "good.seg.png").is_file()
    assert "Traceback" not in captured.err


def test_nothing_succeeding_exits_nonzero(tmp_path, checkpoints, capsys):
    bad_inputs(tmp_path / "in")
    assert run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "in", "-o", tmp_path / "out") == 1
    assert "0 done" in capsys.readouterr().out
    (tmp_path / "none").mkdir()
    assert run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "none", "-o", tmp_path / "out") == 1
    assert "no images or videos found" in capsys.readouterr().err


def test_rerun_skips_and_overwrite_redoes(tmp_path, checkpoints, capsys, monkeypatch):
    write_image(tmp_path / "in" / "a.png", 30, 20)
    write_video(tmp_path / "in" / "v.mp4", 2)
    args = [*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "in", "-o", tmp_path / "out"]
    assert run_cli(*args) == 0
    outputs = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    for p in outputs:
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    import sapiens2.cli.predict as predict_cli

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded when every output exists")

    with monkeypatch.context() as m:
        m.setattr(predict_cli, "build_predictor", no_model)
        assert run_cli(*args) == 0
    assert "(0 done, 2 skipped, 0 failed)" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in outputs)
    assert run_cli(*args, "--overwrite") == 0
    assert "(2 done, 0 skipped, 0 failed)" in capsys.readouterr().out
    # every per-input output is redone; the folder's seg_classes.json is the same for every input and run
    assert all(p.stat().st_mtime_ns != 1_000_000_000 for p in outputs if p.name != "seg_classes.json")


def test_unwritable_output_is_a_clear_error(tmp_path, checkpoints, capsys):
    write_image(tmp_path / "a.png", 30, 20)
    (tmp_path / "file").write_text("x")
    rc = run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "a.png", "-o", tmp_path / "file" / "out")
    err = capsys.readouterr().err
    assert rc == 1 and "cannot create output directory" in err and "Traceback" not in err
    # -o naming a regular file is a usage error, found before any work (issue 22 item 7); the file is untouched
    rc = run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "a.png", "-o", tmp_path / "file")
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and str(tmp_path / "file") in err
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("argv, message", [
    (["--task", "poes"], "did you mean 'pose'"),
    (["--task", "segmentaton"], "did you mean 'seg'"),
    (["--task", "seg", "--input-size", "64by48"], "HxW"),
    (["--task", "seg", "--every", "0"], "--every"),
    (["--checkpoint", "nowhere.safetensors"], "does not exist"),
    ([], "--task"),
])
def test_usage_errors_exit_2(tmp_path, capsys, argv, message):
    write_image(tmp_path / "a.png", 30, 20)
    assert run_cli(*argv, tmp_path / "a.png", "-o", tmp_path / "out") == 2
    assert message in capsys.readouterr().err


def test_checkpoint_task_must_match_the_file(tmp_path, checkpoints, capsys):
    write_image(tmp_path / "a.png", 30, 20)
    assert run_cli("--checkpoint", f"pose={checkpoints['seg']}", tmp_path / "a.png", "-o", tmp_path / "o") == 2
    assert "holds a seg model, not pose" in capsys.readouterr().err


def test_unavailable_model_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    write_image(tmp_path / "a.png", 30, 20)
    rc = run_cli("--task", "seg", "--model", "5b", "--device", "cpu", "--no-progress", tmp_path / "a.png",
                 "-o", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1 and "sapiens2-seg-5b" in err and "offline" in err and "Traceback" not in err


def test_boxes_from_a_folder_of_json_files(tmp_path, checkpoints):
    write_image(tmp_path / "in" / "a.png", 40, 30)
    write_image(tmp_path / "in" / "b.png", 40, 30)
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "a.json").write_text(json.dumps({"boxes": [[2, 3, 20, 30, 0.8], [5, 5, 25, 35]]}))
    rc = run_cli(*ckpt_args(checkpoints, ["pose"]), *FAST, "--boxes", tmp_path / "boxes", tmp_path / "in",
                 "-o", tmp_path / "out")
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "a.pose.json").read_text())
    assert doc["box_source"] == "file" and doc["num_people"] == 2
    assert [p["box"] for p in doc["people"]] == [[2, 3, 20, 30], [5, 5, 25, 35]]
    assert [p["box_score"] for p in doc["people"]] == [0.8, 1.0]
    other = json.loads((tmp_path / "out" / "b.pose.json").read_text())  # no entry: the --detector (none)
    assert other["box_source"] == "whole_image" and other["num_people"] == 1


def test_subprocess_smoke(tmp_path, checkpoints):
    """A real process, as a user runs it; corrupt inputs are reported by us alone: OpenCV's and FFmpeg's own lines
    ("[ WARN:0@...] ... PNG input buffer is incomplete", "moov atom not found") stay off the terminal."""
    write_image(tmp_path / "in" / "a.png", 30, 20)
    bad_inputs(tmp_path / "in")
    ok, png = cv2.imencode(".png", np.full((30, 20, 3), 128, np.uint8))
    (tmp_path / "in" / "cut.png").write_bytes(png.tobytes()[: len(png) // 2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}  # main() may have set them here
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-m", "sapiens2", "predict", "--checkpoint", str(checkpoints["seg"]),
                           *FAST, str(tmp_path / "in"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 done, 0 skipped, 6 failed" in done.stdout
    ours = [line for line in done.stderr.splitlines() if line.startswith("WARNING skipped ")]
    assert len(ours) == 6 and done.stderr.strip().splitlines() == ours, done.stderr
    seg = cv2.imread(str(tmp_path / "out" / "a.seg.png"), cv2.IMREAD_UNCHANGED)
    assert seg.shape == (30, 20) and seg.dtype == np.uint8


# ---------------------------------------------------------------------------------------------- issue 22
def summary_line(printed: str) -> str:
    return next(line for line in printed.splitlines() if line.startswith("inputs:"))


@pytest.mark.parametrize("bad", ['{"boxes": [[1, 2, 3]]}', "{not json"])
def test_a_bad_boxes_file_fails_its_image_only(tmp_path, checkpoints, capsys, bad):
    """A boxes error raised while feeding the model used to end the read-ahead and drop every later image."""
    images = [write_image(tmp_path / "in" / f"{name}.png", 40, 30, seed=i) for i, name in enumerate("abc")]
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "a.json").write_text(bad)
    out = tmp_path / "out"
    rc = run_cli("--checkpoint", checkpoints["pose"], *FAST, "--boxes", tmp_path / "boxes", *images, "-o", out)
    printed = capsys.readouterr().out
    assert rc == 0
    assert summary_line(printed) == "inputs: 3 (2 done, 0 skipped, 1 failed)", printed
    assert f"  {images[0]}: " in printed and "boxes" in printed.split(f"  {images[0]}: ")[1].splitlines()[0]
    assert not (out / "a.pose.json").exists()
    for name in "bc":
        assert json.loads((out / f"{name}.pose.json").read_text())["num_people"] == 1


def test_resume_redoes_inputs_made_with_other_settings(tmp_path, checkpoints, capsys):
    write_image(tmp_path / "in" / "a.png", 30, 20)
    out = tmp_path / "out"
    base = [*ckpt_args(checkpoints, ["pose"]), "--device", "cpu", "--no-progress", "--detector", "none",
            tmp_path / "in", "-o", out]
    assert run_cli(*base, "--input-size", "64x48") == 0
    record = json.loads((out / "a.done.json").read_text())
    assert record["format"] == "sapiens2.done" and record["outputs"] == ["a.pose.json", "a.pose.png"]
    settings = record["settings"]
    assert settings["tasks"] == ["pose"] and settings["input_size"] == [64, 48] and settings["flip_test"] is False
    assert settings["models"]["pose"]["file"] == "tiny_pose.safetensors"
    capsys.readouterr()
    assert run_cli(*base, "--input-size", "64x48") == 0
    assert "(0 done, 1 skipped, 0 failed)" in capsys.readouterr().out
    for other in (["--input-size", "96x64"], ["--input-size", "64x48", "--flip-test"]):
        assert run_cli(*base, *other) == 0
        assert "(1 done, 0 skipped, 0 failed)" in capsys.readouterr().out, other
    (out / "a.done.json").write_text("{")  # a damaged record: redo, not trust
    assert run_cli(*base, "--input-size", "64x48", "--flip-test") == 0
    assert "(1 done, 0 skipped, 0 failed)" in capsys.readouterr().out
    os.utime(checkpoints["pose"])  # another checkpoint file (same name and size: retrained)
    assert run_cli(*base, "--input-size", "64x48", "--flip-test") == 0
    assert "(1 done, 0 skipped, 0 failed)" in capsys.readouterr().out


def test_resume_redoes_videos_with_other_frames(tmp_path, checkpoints, capsys):
    video = write_video(tmp_path / "v.mp4", 6)
    out = tmp_path / "out"
    base = [*ckpt_args(checkpoints, ["seg"]), *FAST, video, "-o", out]
    assert run_cli(*base, "--every", "2") == 0
    assert run_cli(*base, "--every", "2") == 0
    assert "(0 done, 1 skipped, 0 failed)" in capsys.readouterr().out
    for other in (["--every", "3"], ["--every", "3", "--start", "2f"], ["--every", "3", "--end", "5f"]):
        assert run_cli(*base, *other) == 0
        assert "(1 done, 0 skipped, 0 failed)" in capsys.readouterr().out, other


@pytest.mark.parametrize("nested", [True, False])
def test_outputs_inside_the_input_folder_are_not_read_back(tmp_path, checkpoints, capsys, nested):
    write_image(tmp_path / "in" / "x.png", 30, 20)
    write_video(tmp_path / "in" / "v.mp4", 2)
    out = tmp_path / "in" / "out" if nested else tmp_path / "in"
    args = [*ckpt_args(checkpoints, ["pose", "seg"]), *FAST, tmp_path / "in", "-o", out]
    assert run_cli(*args) == 0
    assert summary_line(capsys.readouterr().out) == "inputs: 2 (2 done, 0 skipped, 0 failed)"
    assert (out / "x.seg_vis.png").is_file() and (out / "v.seg.mp4").is_file()
    assert (out / "v" / "000000.seg.png").is_file()
    assert run_cli(*args) == 0
    assert summary_line(capsys.readouterr().out) == "inputs: 2 (0 done, 2 skipped, 0 failed)"
    assert run_cli(*args, "--overwrite") == 0
    assert summary_line(capsys.readouterr().out) == "inputs: 2 (2 done, 0 skipped, 0 failed)"
    assert not list(tmp_path.rglob("*.pose.*.pose.*")) and not list(tmp_path.rglob("*.seg.seg*"))
    assert not (out / "out").exists()


def test_no_person_found_is_reported_as_a_whole_image_fallback(tmp_path, checkpoints, capsys, caplog):
    """HOG finds nobody in noise: the whole image is used, counted apart from people found, warned once."""
    images = [tmp_path / f"{i}.png" for i in range(2)]
    for i, path in enumerate(images):  # flat grey: nothing for HOG to find
        assert cv2.imwrite(str(path), np.full((40, 30, 3), 100 + 20 * i, np.uint8))
    args = [*ckpt_args(checkpoints, ["pose"]), "--input-size", "64x48", "--device", "cpu", "--no-progress"]
    with caplog.at_level("WARNING"):
        assert run_cli(*args, "--detector", "hog", *images, "-o", tmp_path / "out") == 0
    printed = capsys.readouterr().out
    assert "people found: 0; no person found, whole image used: 2" in printed, printed
    assert len([r for r in caplog.records if "whole image" in r.getMessage()]) == 1
    # the whole image asked for (--detector none) is not a fallback
    assert run_cli(*args, *FAST[-2:], *images, "-o", tmp_path / "out2") == 0
    printed = capsys.readouterr().out
    assert "people found: 2" in printed and "whole image used" not in printed


def test_predict_uses_the_input_size_a_checkpoint_was_trained_at(tmp_path, checkpoints, capsys):
    torch.manual_seed(0)
    model = build_model("pose", "sapiens2_tiny", img_size=(64, 48))
    trained = tmp_path / "model.safetensors"  # as `sapiens2 train` writes it: img_size in the metadata
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(trained),
              metadata={"task": "pose", "arch": "sapiens2_tiny", "img_size": "64x48"})
    from sapiens2 import load_model

    assert load_model(trained).img_size == (64, 48)  # the one rule, which eval uses as well
    write_image(tmp_path / "a.png", 30, 20)
    assert run_cli("--checkpoint", trained, "--device", "cpu", "--no-progress", "--detector", "none",
                   tmp_path / "a.png", "-o", tmp_path / "out") == 0
    doc = json.loads((tmp_path / "out" / "a.pose.json").read_text())
    assert doc["input_size"] == {"height": 64, "width": 48}


def test_pose_json_says_how_it_was_made_and_flip_test_is_pose_only(tmp_path, checkpoints, capsys):
    write_image(tmp_path / "a.png", 30, 20)
    assert run_cli(*ckpt_args(checkpoints, ["pose"]), *FAST, "--flip-test", tmp_path / "a.png",
                   "-o", tmp_path / "out") == 0
    doc = json.loads((tmp_path / "out" / "a.pose.json").read_text())
    assert doc["flip_test"] is True and doc["detector"] == "whole_image"
    assert doc["input_size"] == {"height": 64, "width": 48}
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--flip-test pose only:" in help_text and "B.frames.jsonl" in help_text


def test_max_pixels_refuses_large_inputs_alone(tmp_path, checkpoints, capsys):
    import struct

    small = write_image(tmp_path / "in" / "small.png", 20, 30)  # 600 pixels
    large = write_image(tmp_path / "in" / "large.jpg", 40, 30)  # 1200 pixels
    write_video(tmp_path / "in" / "clip.mp4", 2, size=(40, 30))
    bomb = tmp_path / "in" / "bomb.png"  # a header declaring 20000x20000: refused by the default limit
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
                     + struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0) + b"\0\0\0\0")
    rc = run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, tmp_path / "in", "--max-pixels", "1000",
                 "-o", tmp_path / "out")
    out = capsys.readouterr().out
    assert rc == 0 and "1 done" in out and "3 failed" in out
    assert "40x30 is 0.0 megapixels, over the limit of 0.001 megapixels" in out and "--max-pixels" in out
    assert "frames of 40x30" in out
    assert "20000x20000" in out
    assert (tmp_path / "out" / "small.seg.png").is_file() and not (tmp_path / "out" / "large.seg.png").exists()
    # only too-large inputs: nothing succeeded
    assert run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, large, "--max-pixels", "1000",
                   "-o", tmp_path / "out2") == 1
    capsys.readouterr()
    # 0: no limit
    assert run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, large, small, "--max-pixels", "0",
                   "-o", tmp_path / "out3") == 0
    assert "2 done" in capsys.readouterr().out
    assert run_cli(*ckpt_args(checkpoints, ["seg"]), *FAST, small, "--max-pixels", "-1", "-o", tmp_path / "o") == 2
