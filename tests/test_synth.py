"""Synthetic humans: determinism, exact and self-consistent ground truth, keypoint semantics, mirroring, I/O."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sapiens2.data.specs import keypoint_info, seg_classes
from sapiens2.data.synth.appearance import sample_outfit
from sapiens2.data.synth.body import BodyShape, pose_body
from sapiens2.data.synth.mirror import mirror_sample
from sapiens2.data.synth.pose import rest_pose
from sapiens2.data.synth.render import generate_sample, render_people
from sapiens2.data.synth.scene import FACING_CAMERA
from sapiens2.data.synth.writer import write_dataset

H, W = 192, 144
SEEDS = [(11, i) for i in range(6)]
NAMES = keypoint_info().names
CLS = {n: i for i, n in enumerate(seg_classes().names)}


@pytest.fixture(scope="module")
def samples():
    return [generate_sample(s, i, H, W) for s, i in SEEDS]


# ------------------------------------------------------------------------------------------- shared checks
def check_maps(s):
    assert s["seg"].max() < len(CLS) and s["seg"].dtype == np.uint8
    fg = s["mask"].astype(bool)
    assert fg.any()
    assert np.array_equal(fg, s["seg"] > 0) and np.array_equal(fg, s["instance"] > 0)
    assert np.all(s["depth"][fg] > 0) and np.all(s["depth"][~fg] == 0)
    assert np.all(s["pointmap"][~fg] == 0) and np.all(s["normal"][~fg] == 0)
    np.testing.assert_allclose(np.linalg.norm(s["normal"][fg], axis=-1), 1.0, atol=1e-5)
    assert np.all(s["albedo"] >= 0) and np.all(s["albedo"] <= 1)
    # Normals face the camera.
    assert np.all(np.einsum("ni,ni->n", s["normal"][fg], s["pointmap"][fg]) <= 1e-6)


def check_pointmap(s):
    """pointmap = depth * K^-1 [u, v, 1] at integer pixel centres; projecting it lands each pixel on itself."""
    K = s["K"].astype(np.float64)
    fg = s["mask"].astype(bool)
    v, u = np.nonzero(fg)
    P = s["pointmap"][fg].astype(np.float64)
    np.testing.assert_allclose(P[:, 2], s["depth"][fg], rtol=1e-6)
    proj_u = K[0, 0] * P[:, 0] / P[:, 2] + K[0, 2]
    proj_v = K[1, 1] * P[:, 1] / P[:, 2] + K[1, 2]
    assert np.abs(proj_u - u).max() < 1e-3 and np.abs(proj_v - v).max() < 1e-3


@np.errstate(divide="ignore", invalid="ignore")
def fd_normal_angles(s):
    """Angles (deg) between the normals and normals from the pointmap by central differences, smooth pixels."""
    P = s["pointmap"].astype(np.float64)
    seg, inst = s["seg"], s["instance"]
    c = (slice(1, -1), slice(1, -1))
    du = P[1:-1, 2:] - P[1:-1, :-2]
    dv = P[2:, 1:-1] - P[:-2, 1:-1]
    same = np.ones_like(seg[c], dtype=bool)
    for sl in ((slice(1, -1), slice(2, None)), (slice(1, -1), slice(None, -2)),
               (slice(2, None), slice(1, -1)), (slice(None, -2), slice(1, -1))):
        same &= (seg[sl] == seg[c]) & (inst[sl] == inst[c])
    same &= inst[c] > 0
    # Smooth = no kink: each one-sided difference agrees with the other (excludes primitive junctions).
    kink_u = np.linalg.norm(P[1:-1, 2:] + P[1:-1, :-2] - 2 * P[c], axis=-1) / np.linalg.norm(du, axis=-1)
    kink_v = np.linalg.norm(P[2:, 1:-1] + P[:-2, 1:-1] - 2 * P[c], axis=-1) / np.linalg.norm(dv, axis=-1)
    smooth = same & (kink_u < 0.25) & (kink_v < 0.25)
    n_fd = np.cross(du, dv)
    n_fd /= np.linalg.norm(n_fd, axis=-1, keepdims=True)
    n_fd *= -np.sign(np.einsum("hwi,hwi->hw", n_fd, P[c]))[..., None]
    cosang = np.clip(np.einsum("hwi,hwi->hw", n_fd, s["normal"][c].astype(np.float64)), -1, 1)
    return np.degrees(np.arccos(cosang[smooth]))


def _expected():
    """Keypoint -> classes that must appear around it (same person), per side."""
    out = {}
    for side, sfx in (("Left", "left"), ("Right", "right")):
        L = lambda *names: {CLS[f"{side}_{n}"] for n in names}  # noqa: E731
        out[f"{sfx}_wrist"] = L("Hand", "Lower_Arm")
        for f in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"):
            for j in ("_third_joint", "2", "3", "4"):
                out[f"{sfx}_{f}{j}"] = L("Hand")
        out[f"{sfx}_ankle"] = L("Lower_Leg", "Sock", "Shoe", "Foot")
        for j in ("big_toe", "small_toe", "heel"):
            out[f"{sfx}_{j}"] = L("Foot", "Shoe", "Sock")
        out[f"{sfx}_elbow"] = L("Upper_Arm", "Lower_Arm") | {CLS["Upper_Clothing"]}
        out[f"{sfx}_knee"] = L("Upper_Leg", "Lower_Leg") | {CLS["Lower_Clothing"]}
    face = {CLS[n] for n in ("Face_Neck", "Eyeglass", "Hair", "Apparel", "Upper_Lip", "Lower_Lip",
                             "Upper_Teeth", "Lower_Teeth", "Tongue")}
    for i, n in enumerate(NAMES):
        if i in (0, 1, 2, 3, 4) or i >= 70:
            out[n] = face
    return out


EXPECTED = _expected()


def check_keypoint_parts(s, radius=2):
    """Every visible keypoint lies on (or within ``radius`` px of) its person's part of the right side."""
    checked = 0
    for kp, pid in zip(s["keypoints"], s["person_ids"]):
        own = s["instance"] == pid + 1
        for i in np.flatnonzero(kp[:, 2] == 2):
            name = NAMES[i]
            if name not in EXPECTED:
                continue
            x, y = np.rint(kp[i, :2]).astype(int)
            y0, y1, x0, x1 = max(y - radius, 0), y + radius + 1, max(x - radius, 0), x + radius + 1
            near = set(np.unique(s["seg"][y0:y1, x0:x1][own[y0:y1, x0:x1]]).tolist())
            assert near & EXPECTED[name], f"{name} at ({x}, {y}) sees classes {sorted(near)}"
            checked += 1
    return checked


# ------------------------------------------------------------------------------------------- tests
def test_same_seed_same_data_and_different_index_differs():
    a, b = generate_sample(5, 2, H, W), generate_sample(5, 2, H, W)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    c = generate_sample(5, 3, H, W)
    assert not np.array_equal(a["image"], c["image"])


def test_dense_maps_consistent(samples):
    for s in samples:
        check_maps(s)
        check_pointmap(s)


def test_normals_match_pointmap_finite_differences(samples):
    angles = np.concatenate([fd_normal_angles(s) for s in samples])
    assert len(angles) > 5000
    assert angles.mean() < 10.0, angles.mean()


def test_visible_keypoints_on_the_right_parts(samples):
    assert sum(check_keypoint_parts(s) for s in samples) > 200


def test_all_308_keypoints_placed_and_boxes_cover_visible(samples):
    for s in samples:
        assert s["keypoints"].shape[1:] == (308, 3)
        assert np.all(s["keypoints"][..., 2] > 0)  # the model places every official keypoint
        for kp, box in zip(s["keypoints"], s["boxes"]):
            vis = kp[kp[:, 2] == 2, :2]
            x, y, w, h = box
            assert np.all(vis[:, 0] >= x - 1) and np.all(vis[:, 0] <= x + w + 1)
            assert np.all(vis[:, 1] >= y - 1) and np.all(vis[:, 1] <= y + h + 1)


def _person(z, x=0.0, yaw_matrix=FACING_CAMERA, seed=0):
    rng = np.random.default_rng(seed)
    body = pose_body(BodyShape(), rest_pose())
    outfit = sample_outfit(rng, female=False)
    outfit.hat, outfit.hair_style, outfit.glasses = None, "short", None
    return body.transformed(yaw_matrix, np.array([x, 0.0, z])), outfit


def _K():
    f = 220.0
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])


def test_left_is_the_persons_left():
    front = render_people(*map(list, zip(_person(4.0))), _K(), H, W, np.random.default_rng(0))
    back = render_people(*map(list, zip(_person(4.0, yaw_matrix=FACING_CAMERA @ np.diag([-1.0, 1.0, -1.0])))),
                         _K(), H, W, np.random.default_rng(0))
    i = {n: NAMES.index(n) for n in ("left_wrist", "right_wrist", "left_eye", "right_eye", "left_ankle")}
    kf, kb = front["keypoints"][0], back["keypoints"][0]
    assert kf[i["left_wrist"], 0] > kf[i["right_wrist"], 0]  # facing us: their left is on image right
    assert kb[i["left_wrist"], 0] < kb[i["right_wrist"], 0]
    assert kf[i["left_eye"], 2] == 2 and kb[i["left_eye"], 2] == 1  # eyes hidden by the head from behind
    x, y = np.rint(kf[i["left_wrist"], :2]).astype(int)
    assert {CLS["Left_Hand"], CLS["Left_Lower_Arm"]} & set(np.unique(front["seg"][y - 2:y + 3, x - 2:x + 3]))
    assert check_keypoint_parts(front) > 100 and check_keypoint_parts(back) > 20
    # Every explicitly left keypoint (body, hands, feet, eyes, brows, nose, mouth, ears) is on the image right of
    # its right partner when the person faces the camera, and on the image left from behind.
    swap = keypoint_info().swap
    left = [i for i, n in enumerate(NAMES) if swap[i] != i and (n.startswith(("left_", "l_")) or "_l_" in n)]
    assert len(left) == 134  # the other 12 pairs are lip midpoints with no side in their name
    assert np.all(kf[left, 0] > kf[swap[left], 0])
    assert np.all(kb[left, 0] < kb[swap[left], 0])


def test_occluded_keypoints_are_marked():
    alone = render_people(*map(list, zip(_person(5.0))), _K(), H, W, np.random.default_rng(0))
    bodies, outfits = map(list, zip(_person(5.0), _person(2.5, seed=1)))
    both = render_people(bodies, outfits, _K(), H, W, np.random.default_rng(0))
    vis_alone = alone["keypoints"][0, :, 2]
    back = both["keypoints"][list(both["person_ids"]).index(0)] if 0 in both["person_ids"] else None
    assert back is not None
    xy = np.rint(back[:, :2]).astype(int)
    inside = (xy[:, 0] >= 1) & (xy[:, 0] < W - 1) & (xy[:, 1] >= 1) & (xy[:, 1] < H - 1)
    covered = np.zeros(len(xy), dtype=bool)
    covered[inside] = np.all([both["instance"][xy[inside, 1] + dy, xy[inside, 0] + dx] == 2
                              for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    assert covered.sum() > 50
    assert np.all(back[covered, 2] == 1)         # hidden behind the front person
    assert np.mean(vis_alone[covered] == 2) > 0.5  # most of them were visible without the occluder


def test_mirrored_sample_is_valid(samples):
    for s in samples[:4]:
        m = mirror_sample(s)
        check_maps(m)
        check_pointmap(m)
        assert fd_normal_angles(m).mean() < 10.0
        assert check_keypoint_parts(m) > 0
        np.testing.assert_allclose(mirror_sample(m)["keypoints"], s["keypoints"], atol=1e-4)
        np.testing.assert_array_equal(mirror_sample(m)["seg"], s["seg"])
    # Left classes really move: a left hand becomes a right hand.
    s = samples[0]
    assert np.sum(s["seg"] == CLS["Left_Hand"]) == np.sum(mirror_sample(s)["seg"] == CLS["Right_Hand"])


def test_writer_round_trip(tmp_path):
    root = write_dataset(tmp_path / "d", 3, seed=4, height=H, width=W, progress=False)
    ref = generate_sample(4, 1, H, W)
    manifest = json.loads((root / "manifest.json").read_text())
    coco = json.loads((root / "annotations.json").read_text())
    assert manifest["num"] == 3 and len(manifest["samples"]) == 3 and len(coco["images"]) == 3
    assert len(coco["categories"][0]["keypoints"]) == 308
    entry = manifest["samples"][1]
    img = cv2.imread(str(root / entry["images"]))[..., ::-1]
    assert np.array_equal(img, ref["image"])
    assert np.array_equal(cv2.imread(str(root / entry["seg"]), cv2.IMREAD_UNCHANGED), ref["seg"])
    depth = cv2.imread(str(root / entry["depth"]), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and np.abs(depth / 1000.0 - ref["depth"]).max() <= 0.0005 + 1e-6
    normal = np.load(root / entry["normal"])
    assert normal.dtype == np.float16 and np.abs(normal - ref["normal"]).max() < 1e-3
    assert np.array_equal(np.load(root / entry["pointmap"]), ref["pointmap"])
    anns = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert len(anns) == len(ref["person_ids"])
    kp = np.array(anns[0]["keypoints"]).reshape(308, 3)
    np.testing.assert_allclose(kp[:, :2], ref["keypoints"][0, :, :2], atol=0.006)
    assert np.array_equal(kp[:, 2], ref["keypoints"][0, :, 2])


def test_dataset_and_cli_preview(tmp_path):
    from sapiens2.cli.main import main
    from sapiens2.data.synth.dataset import SynthHumans, collate

    ds = SynthHumans(2, seed=3, height=H, width=W)
    item = ds[1]
    ref = generate_sample(3, 1, H, W)
    assert item["image"].shape == (3, H, W) and np.array_equal(item["image"].permute(1, 2, 0).numpy(), ref["image"])
    assert collate([ds[0], item])["normal"].shape == (2, 3, H, W)
    with pytest.raises(IndexError):
        ds[2]
    assert main(["synth", "--preview", "-o", str(tmp_path), "--height", "64", "--width", "48"]) == 0
    sheet = cv2.imread(str(tmp_path / "preview.png"))
    assert sheet is not None and sheet.shape[0] >= 8 * 64


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="at least 8x8"):
        generate_sample(0, 0, 4, 4)
