"""Augmentations move image and targets together (labels, vectors, intrinsics, keypoints), per the official recipes."""
from __future__ import annotations

import numpy as np
import pytest

from sapiens2.data.specs import keypoint_info, seg_classes
from sapiens2.training.transforms import (GeometryParams, ImageAugment, PoseAugment, augment_dense, augment_image,
                                      dense_recipe, pose_recipe, sample_geometry, sample_pose_crop, warp_sample)
from sapiens2.data.synth.mirror import class_swap
from sapiens2.training.transforms.geometric import flip_matrix
from sapiens2.tasks.pose.crop import udp_warp_matrix
from sapiens2.training.transforms.topdown import topdown_matrix


def _scene(h=60, w=44, seed=0):
    """A sample whose image is the seg palette, with a slanted plane as pointmap / normals."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((h, w), np.int32)
    seg[10:50, 8:20] = seg_classes().names.index("Left_Upper_Arm")
    seg[10:50, 24:36] = seg_classes().names.index("Right_Upper_Arm")
    seg[5:10, 15:30] = 3
    palette = rng.integers(0, 256, (29, 3)).astype(np.uint8)
    k = np.array([[50.0, 0, 21.3], [0, 50.0, 29.1], [0, 0, 1]], np.float32)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = 2.0 + 0.01 * u + 0.02 * v
    pts = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], -1).astype(np.float32)
    normal = np.broadcast_to(np.array([0.3, -0.2, -0.933], np.float32), (h, w, 3)).copy()
    mask = (seg > 0).astype(np.uint8)
    return {"image": palette[seg], "seg": seg, "mask": mask, "pointmap": pts * mask[..., None], "normal": normal,
            "albedo": palette[seg].astype(np.float32) / 255, "K": k}, palette


def _project(sample):
    v, u = np.nonzero(sample["mask"] > 0)
    x, y, z = sample["pointmap"][v, u].T
    k = sample["K"]
    return k[0, 0] * x / z + k[0, 2] - u, k[1, 1] * y / z + k[1, 2] - v


def test_flip_swaps_classes_negates_x_and_keeps_projection():
    s, _ = _scene()
    f = warp_sample(s, flip_matrix(s["image"].shape[1]), s["image"].shape[:2], flipped=True)
    names = seg_classes().names
    assert (f["seg"][20, 44 - 1 - 12] == names.index("Right_Upper_Arm"))  # left arm moved right and renamed
    assert (f["seg"][20, 44 - 1 - 30] == names.index("Left_Upper_Arm"))
    np.testing.assert_allclose(f["normal"][0, 0], [-0.3, -0.2, -0.933], rtol=1e-6)
    assert f["K"][0, 0] > 0
    du, dv = _project(f)
    assert np.abs(du).max() < 1e-3 and np.abs(dv).max() < 1e-3
    back = warp_sample(f, flip_matrix(44), (60, 44), flipped=True)
    for key in ("image", "seg", "mask", "pointmap", "normal", "albedo"):
        np.testing.assert_array_equal(back[key], s[key])
    np.testing.assert_allclose(back["K"], s["K"], atol=1e-5)


@pytest.mark.parametrize("task", ["seg", "normal", "pointmap", "albedo"])
def test_random_recipe_keeps_image_and_targets_aligned(task):
    s, palette = _scene()
    if task == "seg":
        s = {k: s[k] for k in ("image", "seg")}
    elif task == "normal":
        s = {k: s[k] for k in ("image", "seg", "mask", "normal", "albedo")}
    recipe = dense_recipe(task)
    geometry_only = type(recipe)(recipe.geometry, ImageAugment())
    flips = 0
    for seed in range(12):
        out = augment_dense(s, np.random.default_rng(seed), geometry_only, task, (48, 36))
        assert out["image"].shape == (48, 36, 3) and out["seg"].shape == (48, 36)
        if task == "pointmap":
            du, dv = _project(out)
            # K follows the warp; nearest sampling moves a point by at most half a source pixel
            half_x = 0.5 * out["K"][0, 0] / s["K"][0, 0] + 1e-3
            half_y = 0.5 * out["K"][1, 1] / s["K"][1, 1] + 1e-3
            assert np.abs(du).max() <= half_x and np.abs(dv).max() <= half_y
        interior = _interior(out["seg"])
        colours = out["image"][interior].astype(int)
        seg = out["seg"][interior]
        plain = (np.abs(colours - palette[seg]) <= 1).all(1).mean()
        mirrored = (np.abs(colours - palette[class_swap()[seg]]) <= 1).all(1).mean()
        flips += mirrored > plain
        assert max(plain, mirrored) > 0.99  # pixels and labels moved together (flip: labels renamed)
        if "albedo" in out:  # nearest-sampled targets match the bilinear image where it is uniform
            np.testing.assert_allclose(out["albedo"][interior] * 255, out["image"][interior], atol=1.01)
    assert 0 < flips < 12


def _interior(labels):
    """Pixels whose 3x3 neighbourhood has one label (bilinear image values are exact there)."""
    lab = labels.astype(np.int64)
    same = np.ones_like(lab, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= np.roll(np.roll(lab, dy, 0), dx, 1) == lab
    same[[0, -1]] = False
    same[:, [0, -1]] = False
    return same & (lab > 0)


def test_rotation_is_refused_for_camera_geometry():
    s, _ = _scene()
    rotate = GeometryParams(rotate_prob=1.0, max_rotate_deg=30)
    m, flipped = sample_geometry(np.random.default_rng(0), rotate, (60, 44), (60, 44))
    with pytest.raises(ValueError, match="cannot rotate"):
        warp_sample(s, m, (60, 44), flipped)
    seg_only = warp_sample({"image": s["image"], "seg": s["seg"]}, m, (60, 44), flipped)
    assert seg_only["seg"][0, 0] == 0  # padding is background


def test_albedo_never_gets_colour_changes():
    r = dense_recipe("albedo")
    assert r.image.photometric_prob == 0 and r.image.solarize_prob == 0 and r.image.noise_prob == 0.2
    assert dense_recipe("normal").image.photometric_prob == 1.0
    img = np.full((8, 8, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="albedo"):
        augment_image(img, np.random.default_rng(0), ImageAugment(photometric_prob=1.0), "albedo")
    out = augment_image(img, np.random.default_rng(0), ImageAugment(photometric_prob=1.0, noise_prob=1.0,
                                                                     solarize_prob=1.0, dropout_prob=1.0), "seg")
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)


def test_topdown_matrix_matches_the_inference_warp():
    c, s = np.array([40.5, 61.0]), np.array([30.0, 40.0])
    np.testing.assert_allclose(topdown_matrix(c, s, (48, 64))[:2], udp_warp_matrix(c, s, (48, 64)), rtol=1e-6)


def test_pose_crop_moves_keypoints_with_the_pixels():
    info = keypoint_info()
    h, w = 120, 90
    kp = np.zeros((308, 2))
    vis = np.zeros(308)
    left, right = info.names.index("left_wrist"), info.names.index("right_wrist")
    kp[left], kp[right] = (30.0, 50.0), (62.0, 80.0)
    vis[[left, right]] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[48:53, 28:33] = (255, 0, 0)  # red blob on the left wrist, green on the right
    image[78:83, 60:65] = (0, 255, 0)
    aug = PoseAugment(flip_prob=0.5, half_body_prob=0, shift_prob=1.0, scale_prob=1.0, rotate_prob=1.0)
    seen_flip = False
    checked = 0
    for seed in range(8):
        crop = sample_pose_crop(np.random.default_rng(seed), image, np.array([10.0, 20, 80, 110]), kp, vis,
                                (48, 64), aug)
        seen_flip |= crop.flipped
        for idx, channel in ((left, 0), (right, 1)):
            # after a flip the left-wrist slot holds the (mirrored) right wrist, i.e. the green blob
            colour = channel if not crop.flipped else 1 - channel
            ys, xs = np.nonzero(crop.image[..., colour] > 128)
            if len(xs):  # the blob may fall outside a shifted / rotated crop
                checked += 1
                assert np.hypot(xs.mean() - crop.keypoints[idx, 0], ys.mean() - crop.keypoints[idx, 1]) < 1.5
    assert seen_flip and checked >= 8  # most wrists are in view: the check above really ran
    assert pose_recipe().image.dropout_prob == 1.0 and pose_recipe().geometry.rotate_factor == 80.0
