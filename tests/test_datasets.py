"""Dataset readers: the synthetic on-disk format, COCO 308 / WholeBody-133 keypoints, and clear errors."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from sapiens2.training.datasets import (DatasetError, DenseDataset, TopDownPoseDataset, build_dataset, image_ids_of,
                                    read_coco_keypoints, wholebody_to_308)
from sapiens2.data.specs import keypoint_info
from sapiens2.data.synth import write_dataset
from sapiens2.tasks.pose import decode_udp_heatmaps, decoded_to_image, keypoint_format


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), num=4, seed=3, height=96, width=72, max_people=2,
                         progress=False)


def test_dense_items_match_the_files(synth_dir):
    coco = json.loads((synth_dir / "annotations.json").read_text())
    entry = coco["images"][1]
    for task in ("seg", "normal", "pointmap", "albedo"):
        ds = DenseDataset(task, synth_dir, input_hw=(96, 72))  # native size: values must be untouched
        item = ds[1]
        img = cv2.imread(str(synth_dir / entry["file_name"]))[..., ::-1]
        restored = item["image"] * torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1) + \
            torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
        assert torch.allclose(restored.permute(1, 2, 0), torch.from_numpy(img.copy()).float(), atol=1e-3)
        if task == "seg":
            seg = cv2.imread(str(synth_dir / entry["seg_file"]), cv2.IMREAD_UNCHANGED)
            assert torch.equal(item["seg"], torch.from_numpy(seg.astype(np.int64)))
            continue
        mask = cv2.imread(str(synth_dir / entry["mask_file"]), cv2.IMREAD_UNCHANGED) > 0
        target = np.load(synth_dir / entry[f"{task}_file"]).astype(np.float32)
        assert torch.equal(item["mask"][0] > 0, torch.from_numpy(mask))
        np.testing.assert_array_equal(item[task].permute(1, 2, 0).numpy()[mask], target[mask])
        if task == "pointmap":
            fx, fy, cx, cy = entry["intrinsics"]
            assert torch.allclose(item["K"], torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]))


def test_dense_resize_scales_intrinsics(synth_dir):
    ds = DenseDataset("pointmap", synth_dir, input_hw=(48, 36))
    item = ds[0]
    assert item["pointmap"].shape == (3, 48, 36) and item["mask"].shape == (1, 48, 36)
    fx, fy, cx, cy = json.loads((synth_dir / "annotations.json").read_text())["images"][0]["intrinsics"]
    # half size, pixel-centre convention: c' = (c + 0.5) / 2 - 0.5
    assert torch.allclose(item["K"][0], torch.tensor([fx / 2, 0, (cx + 0.5) / 2 - 0.5]), atol=1e-4)
    # geometry is preserved: valid points project through the new K onto their pixel, up to the nearest-neighbour
    # pick (half an input pixel = a quarter output pixel at half size)
    pm, mask, k = item["pointmap"].numpy(), item["mask"][0].numpy() > 0, item["K"].numpy()
    v, u = np.nonzero(mask)
    x, y, z = pm[:, v, u]
    np.testing.assert_allclose(k[0, 0] * x / z + k[0, 2], u, atol=0.2501)
    np.testing.assert_allclose(k[1, 1] * y / z + k[1, 2], v, atol=0.2501)


def test_pose_eval_items_decode_back_to_the_annotation(synth_dir):
    ds = TopDownPoseDataset(synth_dir / "annotations.json", input_hw=(64, 48), sigma=2.0)
    assert len(ds) == len(ds.people) > 0
    item = ds[0]
    assert item["heatmaps"].shape == (308, 16, 12) and item["keypoint_weights"].shape == (308,)
    person = ds.people[0]
    labelled = person.keypoints[:, 2] > 0
    np.testing.assert_array_equal(item["keypoint_weights"].numpy() > 0, labelled & (item["keypoint_weights"].numpy()
                                                                                     > 0))
    kp, _ = decode_udp_heatmaps(item["heatmaps"].numpy()[None], ds.input_wh)
    back = decoded_to_image(kp, item["center"].numpy()[None], item["size"].numpy()[None], ds.input_wh)[0]
    drawn = item["keypoint_weights"].numpy() > 0
    box_side = max(person.bbox_xyxy[2:] - person.bbox_xyxy[:2])
    err = np.linalg.norm(back[drawn] - person.keypoints[drawn, :2], axis=1)
    assert np.median(err) < 0.02 * box_side  # the target heatmap peaks sit on the annotation


def test_training_items_are_reproducible_per_key(synth_dir):
    ds = build_dataset("seg", synth_dir, train=True, input_hw=(48, 36))
    a, b, c = ds[(1, 7)], ds[(1, 7)], ds[(1, 8)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["seg"], b["seg"])
    assert not torch.equal(a["image"], c["image"])


def test_image_id_split(synth_dir):
    ids = image_ids_of(synth_dir)
    assert ids == [0, 1, 2, 3]
    ds = build_dataset("albedo", synth_dir, train=False, input_hw=(48, 36), image_ids=ids[-1:])
    assert len(ds) == 1 and ds[0]["image_id"] == 3
    with pytest.raises(DatasetError, match="not in"):
        build_dataset("albedo", synth_dir, train=False, input_hw=(48, 36), image_ids=[99])


def test_wholebody_maps_only_direct_name_matches():
    fmt = keypoint_format("coco_wholebody133")
    pts = np.zeros((133, 3))
    pts[:, 0] = np.arange(133)
    pts[:, 2] = 2
    out = wholebody_to_308(pts)
    names = keypoint_info().names
    assert out.shape == (308, 3)
    direct = [i for i, s in enumerate(fmt.sources) if len(s) == 1]
    targets = {fmt.sources[i][0] for i in direct}
    assert int((out[:, 2] > 0).sum()) == len(targets)  # wrists are named twice (body + hand root)
    for i in direct:
        first = min(j for j in direct if fmt.sources[j] == fmt.sources[i])
        assert out[names.index(fmt.sources[i][0]), 0] == first  # the body point wins
    pts[9, 2] = 0  # body left wrist unlabelled: the left hand root fills in
    assert wholebody_to_308(pts)[names.index("left_wrist"), 0] == 91
    midpoints = [i for i, s in enumerate(fmt.sources) if len(s) == 2]
    assert midpoints and all(i not in out[:, 0][out[:, 2] > 0] for i in midpoints)


def test_wholebody_split_fields(tmp_path):
    img = np.zeros((40, 30, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    ann = {"id": 5, "image_id": 1, "bbox": [2, 3, 20, 30], "iscrowd": 0,
           "keypoints": [10, 10, 2] * 17, "foot_kpts": [11, 12, 1] * 6, "face_kpts": [0, 0, 0] * 68,
           "lefthand_kpts": [5, 6, 2] * 21, "righthand_kpts": [0, 0, 0] * 21}
    (tmp_path / "wb.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 40,
                                                               "width": 30}], "annotations": [ann]}))
    coco = read_coco_keypoints(tmp_path / "wb.json")
    assert coco.layout == "coco_wholebody133" and len(coco.people) == 1
    kp = coco.people[0].keypoints
    names = keypoint_info().names
    assert tuple(kp[names.index("nose")]) == (10, 10, 2)
    assert tuple(kp[names.index("left_big_toe")]) == (11, 12, 1)
    assert np.all(kp[[names.index(n) for n in names if "right_thumb" in n or "rthumb" in n], 2] == 0)
    np.testing.assert_allclose(coco.people[0].bbox_xyxy, [2, 3, 22, 33])
    item = TopDownPoseDataset(tmp_path / "wb.json", input_hw=(32, 24))[0]
    assert item["keypoint_weights"].sum() > 0


def test_errors_name_the_problem(synth_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    coco = json.loads((bad / "annotations.json").read_text())
    (bad / coco["images"][0]["normal_file"]).unlink()
    with pytest.raises(DatasetError, match="normal map not found"):
        DenseDataset("normal", bad, input_hw=(96, 72))[0]
    np.save(bad / coco["images"][1]["albedo_file"], np.zeros((10, 10, 3), np.float16))
    with pytest.raises(DatasetError, match=r"shape \(10, 10, 3\), expected \(96, 72, 3\)"):
        DenseDataset("albedo", bad, input_hw=(96, 72))[1]
    seg = cv2.imread(str(bad / coco["images"][2]["seg_file"]), cv2.IMREAD_UNCHANGED)
    seg[0, 0] = 40
    cv2.imwrite(str(bad / coco["images"][2]["seg_file"]), seg)
    with pytest.raises(DatasetError, match=r"class ids \[40\]"):
        DenseDataset("seg", bad, input_hw=(96, 72))[2]
    coco["annotations"][0]["keypoints"] = coco["annotations"][0]["keypoints"][:30]
    (bad / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="expected 924 .308 keypoints. or 399"):
        read_coco_keypoints(bad / "annotations.json")
    del coco["images"][3]["intrinsics"]
    (bad / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="lacks intrinsics"):
        DenseDataset("pointmap", bad)
    with pytest.raises(DatasetError, match="no annotations.json"):
        DenseDataset("seg", tmp_path / "nowhere")
