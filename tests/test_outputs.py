"""Writers of Prediction files (sapiens2.serving.outputs / pose_json / naming) on hand-made predictions."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sapiens2.data.specs import seg_classes
from sapiens2.io import InputItem
from sapiens2.serving.naming import output_bases
from sapiens2.serving.outputs import (OutputOptions, depth_millimetres, image_outputs, render_task, subsample,
                                      write_prediction)
from sapiens2.serving.pose_json import VIEWS, image_pose_document
from sapiens2.tasks.results import (AlbedoResult, MattingResult, NormalResult, PointmapResult, PoseResult,
                                    Prediction, SegResult)

H, W = 40, 30


def read_ply(path: Path) -> tuple[list[str], np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = int(next(line.split()[-1] for line in header if line.startswith("element vertex")))
    vertex = np.dtype([("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    return header, np.frombuffer(data[end:], dtype=vertex, count=count)


def make_prediction(rng: np.random.Generator, people: int = 2, with_probs: bool = False) -> Prediction:
    keypoints = rng.uniform(0, [W - 1, H - 1], size=(people, 308, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, size=(people, 308)).astype(np.float32)
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 8:20] = rng.integers(1, 29, size=(20, 12))
    probs = rng.dirichlet(np.ones(29), size=(H, W)).transpose(2, 0, 1).astype(np.float32) if with_probs else None
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    points = np.stack(np.meshgrid(np.arange(W), np.arange(H)), axis=2).astype(np.float32) / 100
    points = np.concatenate([points, np.full((H, W, 1), 2.5, np.float32)], axis=2)
    points[0, 0, 2] = 70.0  # beyond 65.535 m: clipped in the 16-bit depth
    alpha = rng.uniform(0, 1, size=(H, W)).astype(np.float32)
    return Prediction(
        image_size=(H, W), source=Path("x.jpg"),
        pose=PoseResult(boxes=np.array([[1, 2, 20, 30]] * people, np.float32).reshape(-1, 4),
                        box_scores=np.full(people, 0.9, np.float32), keypoints=keypoints, scores=scores,
                        box_source="file"),
        seg=SegResult(mask=mask, probabilities=probs),
        normal=NormalResult(normals=normals),
        pointmap=PointmapResult(pointmap=points, scale=1.0),
        albedo=AlbedoResult(albedo=rng.uniform(0, 1, (H, W, 3)).astype(np.float32)),
        matting=MattingResult(alpha=alpha, foreground=rng.uniform(0, 1, (H, W, 3)).astype(np.float32) * alpha[..., None]),
    )


TASKS = ["pose", "seg", "normal", "pointmap", "albedo", "matting"]


def test_every_task_file_is_written_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    prediction = make_prediction(rng, with_probs=True)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    options = OutputOptions(seg_probabilities=True, model_names={"pose": "test-pose"})
    base = tmp_path / "sub" / "x"
    written = write_prediction(prediction, image, base, TASKS, options)
    assert sorted(written) == sorted(image_outputs(base, TASKS, options))
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert not list(tmp_path.rglob(".*s2tmp*"))  # no temporary files left

    doc = json.loads((tmp_path / "sub/x.pose.json").read_text())
    assert doc["model"] == "test-pose" and doc["image_size"] == {"height": H, "width": W}
    assert doc["box_source"] == "file" and doc["num_people"] == 2 and len(doc["keypoint_names"]) == 308
    assert len(doc["skeleton"]) > 0 and doc["format_version"] == 1
    person = doc["people"][0]
    assert len(person["keypoints"]) == 308 and all(len(p) == 3 for p in person["keypoints"])
    np.testing.assert_allclose(np.array(person["keypoints"])[:, :2], prediction.pose.keypoints[0], atol=0.006)
    np.testing.assert_allclose(np.array(person["keypoints"])[:, 2], prediction.pose.scores[0], atol=6e-5)
    lengths = {"coco17": 17, "coco_wholebody133": 133, "openpose_body25": 25, "openpose_hand21_left": 21,
               "openpose_hand21_right": 21, "openpose_face70": 70}
    assert set(VIEWS) == set(lengths)
    for view, n in lengths.items():
        assert len(person[view]) == n and doc["views"][view]["num_keypoints"] == n
        assert len(doc["views"][view]["mapping"]) == n
    # COCO-17 left_wrist (index 9) is the 308 left_wrist
    names = doc["keypoint_names"]
    assert person["coco17"][9] == person["keypoints"][names.index("left_wrist")]

    pose_png = cv2.imread(str(tmp_path / "sub/x.pose.png"))
    assert pose_png.shape == (H, W, 3)

    seg = cv2.imread(str(tmp_path / "sub/x.seg.png"), cv2.IMREAD_UNCHANGED)
    assert seg.dtype == np.uint8 and seg.shape == (H, W)
    np.testing.assert_array_equal(seg, prediction.seg.mask)
    from sapiens2.visualization import legend_width

    vis = cv2.imread(str(tmp_path / "sub/x.seg_vis.png"))[..., ::-1]
    assert vis.shape == (H, W + legend_width(H), 3)
    classes = json.loads((tmp_path / "sub" / "seg_classes.json").read_text())["classes"]
    assert [c["name"] for c in classes] == list(seg_classes().names)
    assert [c["id"] for c in classes] == list(range(29))
    legend = vis[:, W:].reshape(-1, 3)
    for cid in np.unique(prediction.seg.mask)[1:4]:  # swatches in the class file's colours (a 40 px tall image
        assert (legend == classes[cid]["color"]).all(axis=1).sum() >= 4, classes[cid]["name"]  # lists 9)
    probs = np.load(tmp_path / "sub/x.seg_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (29, H, W)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=0.02)

    normals = np.load(tmp_path / "sub/x.normal.npy")
    assert normals.dtype == np.float32 and normals.shape == (H, W, 3)
    np.testing.assert_array_equal(normals, prediction.normal.normals)

    pointmap = np.load(tmp_path / "sub/x.pointmap.npy")
    np.testing.assert_array_equal(pointmap, prediction.pointmap.pointmap)
    depth = cv2.imread(str(tmp_path / "sub/x.depth.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.shape == (H, W)
    fg = prediction.seg.mask > 0  # no pointmap mask: the seg foreground limits depth and the cloud
    assert (depth[~fg] == 0).all() and (depth[fg] == 2500).all()
    header, vertices = read_ply(tmp_path / "sub/x.ply")
    assert len(vertices) == fg.sum()
    np.testing.assert_array_equal(vertices["rgb"], image[fg])
    np.testing.assert_allclose(vertices["xyz"], prediction.pointmap.pointmap[fg])

    albedo = cv2.imread(str(tmp_path / "sub/x.albedo.png"))[..., ::-1]
    np.testing.assert_array_equal(albedo, np.rint(prediction.albedo.albedo * 255).astype(np.uint8))
    alpha = cv2.imread(str(tmp_path / "sub/x.alpha.png"), cv2.IMREAD_UNCHANGED)
    assert alpha.dtype == np.uint8 and alpha.shape == (H, W)
    np.testing.assert_array_equal(alpha, np.rint(prediction.matting.alpha * 255).astype(np.uint8))
    cutout = cv2.imread(str(tmp_path / "sub/x.cutout.png"), cv2.IMREAD_UNCHANGED)
    assert cutout.shape == (H, W, 4)
    np.testing.assert_array_equal(cutout[..., 3], alpha)


def test_depth_millimetres_clips_and_zeroes_invalid():
    depth = np.array([[0.0005, 1.2345, 70.0, np.nan]], np.float32)
    valid = np.array([[True, True, True, False]])
    np.testing.assert_array_equal(depth_millimetres(depth, valid), [[1, 1234, 65535, 0]])


def test_pointcloud_is_capped_and_whole_image_without_mask(tmp_path):
    rng = np.random.default_rng(1)
    prediction = make_prediction(rng)
    prediction.seg = None  # no foreground known: every valid pixel
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    write_prediction(prediction, image, tmp_path / "a", ["pointmap"], OutputOptions())
    assert len(read_ply(tmp_path / "a.ply")[1]) == H * W
    write_prediction(prediction, image, tmp_path / "b", ["pointmap"], OutputOptions(ply_max_points=100))
    assert len(read_ply(tmp_path / "b.ply")[1]) == 100
    picked = subsample(np.arange(1000), 10)
    assert picked[0] == 0 and picked[-1] == 999 and len(np.unique(picked)) == 10


def test_no_people_gives_valid_json_and_plain_visualisation(tmp_path):
    rng = np.random.default_rng(2)
    prediction = make_prediction(rng, people=0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    write_prediction(prediction, image, tmp_path / "e", ["pose"], OutputOptions())
    doc = json.loads((tmp_path / "e.pose.json").read_text())
    assert doc["num_people"] == 0 and doc["people"] == []
    np.testing.assert_array_equal(render_task(prediction, image, "pose"), image)


def test_nan_keypoints_are_written_as_zero_points():
    rng = np.random.default_rng(3)
    pose = make_prediction(rng, people=1).pose
    pose.keypoints[0, 5] = np.nan
    doc = image_pose_document(pose, model=None, image_size=(H, W))
    assert doc["people"][0]["keypoints"][5] == [0.0, 0.0, 0.0]
    json.dumps(doc, allow_nan=False)


def test_missing_result_is_a_clear_error(tmp_path):
    prediction = Prediction(image_size=(H, W), source=Path("y.jpg"))
    with pytest.raises(ValueError, match="no seg result"):
        write_prediction(prediction, np.zeros((H, W, 3), np.uint8), tmp_path / "y", ["seg"], OutputOptions())


def test_output_names_do_not_collide(tmp_path):
    items = [InputItem(Path("a/x.jpg"), "image", Path("x.jpg")), InputItem(Path("b/x.jpg"), "image", Path("x.jpg")),
             InputItem(Path("b/x.png"), "image", Path("x.png")), InputItem(Path("c/X.jpg"), "image", Path("X.jpg")),
             InputItem(Path("d/s/y.mp4"), "video", Path("s/y.mp4"))]
    bases = output_bases(items, tmp_path)
    assert [b.relative_to(tmp_path).as_posix() for b in bases] == ["x", "x_jpg", "x_png", "X_2", "s/y"]
    assert output_bases(items, tmp_path) == bases  # deterministic, so re-runs find their outputs


def test_subsample_mask_equals_subsample_of_all_indices(monkeypatch):
    from sapiens2.serving.outputs import subsample_mask
    from sapiens2.visualization import _arrays

    valid = np.random.default_rng(0).random((37, 29)) > 0.4
    monkeypatch.setattr(_arrays, "BAND_PIXELS", 29 * 3)  # 3-row bands
    for cap in (0, 5, 100, 10_000):
        np.testing.assert_array_equal(subsample_mask(valid, cap), subsample(np.flatnonzero(valid), cap))


def test_seg_overlay_of_huge_images_is_a_bounded_preview(monkeypatch):
    from sapiens2.serving import outputs

    image = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    labels = np.zeros((60, 90), np.uint8)
    labels[10:50, 20:70] = 3
    same_image, same_labels = outputs.seg_preview(image, labels)
    assert same_image is image and same_labels is labels
    monkeypatch.setattr(outputs, "PREVIEW_MAX_PIXELS", 600)
    small_image, small_labels = outputs.seg_preview(image, labels)
    assert small_image.shape == (20, 30, 3) and small_labels.shape == (20, 30)
    assert set(np.unique(small_labels)) == {0, 3}
