import numpy as np
import pytest
import torch
from conftest import rel_err
from safetensors.numpy import load_file

from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps, heatmap_maxima
from sapiens2.tasks.pose.crop import boxes_to_center_size, decoded_to_image, image_to_crop, udp_warp_matrix

INPUT, HEATMAP = (768, 1024), (192, 256)


@pytest.fixture(scope="module")
def codec_case(official_dir):
    return load_file(official_dir / "pose-codec.safetensors")


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def test_encode_matches_official(codec_case):
    heatmaps, weights = encode_udp_heatmaps(codec_case["keypoints_in"], INPUT, HEATMAP, sigma=6.0)
    assert heatmaps.shape == (6, 256, 192) and heatmaps.dtype == np.float32
    assert rel_err(t(heatmaps), t(codec_case["heatmaps"])) < 1e-4
    np.testing.assert_array_equal(weights, np.ones((1, 6), np.float32))


def test_decode_matches_official(codec_case):
    keypoints, scores = decode_udp_heatmaps(codec_case["heatmaps_noisy"], INPUT)
    assert keypoints.shape == (6, 2) and scores.shape == (6,)
    assert rel_err(t(keypoints[None]), t(codec_case["decoded_keypoints"])) < 1e-4
    assert rel_err(t(scores[None]), t(codec_case["decoded_scores"])) < 1e-4


def test_decode_batched_equals_single(codec_case):
    hm = codec_case["heatmaps_noisy"]
    batch = np.stack([hm, hm[::-1].copy()])
    kp, sc = decode_udp_heatmaps(batch, INPUT)
    assert kp.shape == (2, 6, 2) and sc.shape == (2, 6)
    kp0, sc0 = decode_udp_heatmaps(hm, INPUT)
    np.testing.assert_allclose(kp[0], kp0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(kp[1], kp0[::-1], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(sc[1], sc0[::-1])


def test_subpixel_recovery_in_image_coordinates():
    """box -> crop -> heatmap -> decode -> image recovers random sub-pixel points to < 0.05 px."""
    rng = np.random.default_rng(0)
    boxes = np.array([[100.3, 50.7, 420.1, 700.2], [10.0, 20.0, 90.0, 60.0], [500.0, 0.0, 1900.0, 1080.0]])
    centers, sizes = boxes_to_center_size(boxes)
    matrices = udp_warp_matrix(centers, sizes)
    for i in range(len(boxes)):
        # random points inside the box, away from its border so the Gaussian is whole
        lo, hi = boxes[i, :2], boxes[i, 2:]
        pts = lo + (hi - lo) * rng.uniform(0.2, 0.8, size=(8, 2))
        crop_pts = image_to_crop(pts[None], matrices[i][None])[0]
        heatmaps, _ = encode_udp_heatmaps(crop_pts, INPUT, HEATMAP, sigma=6.0)
        decoded, scores = decode_udp_heatmaps(heatmaps, INPUT)
        back = decoded_to_image(decoded[None], centers[i][None], sizes[i][None])[0]
        err = np.abs(back - pts).max()
        assert err < 0.05, (i, err)
        assert np.all(scores > 0.9)


def test_out_of_bounds_and_invisible_keypoints_get_zero_weight():
    kps = np.array([[100.0, 100.0], [-500.0, 100.0], [100.0, 5000.0], [300.0, 300.0]], np.float32)
    heatmaps, weights = encode_udp_heatmaps(kps, INPUT, HEATMAP, sigma=6.0,
                                            visible=np.array([1, 1, 1, 0], np.float32))
    np.testing.assert_array_equal(weights, [[1, 0, 0, 0]])
    assert heatmaps[0].max() > 0.9
    assert not heatmaps[1:].any()


def test_non_positive_heatmap_gives_minus_one():
    hm = np.zeros((3, 16, 12), np.float32)
    hm[1] = -1.0
    hm[2, 5, 4] = 1.0
    locs, vals = heatmap_maxima(hm)
    np.testing.assert_array_equal(locs[:2], -np.ones((2, 2)))
    np.testing.assert_array_equal(locs[2], [4, 5])
    kp, sc = decode_udp_heatmaps(hm, (48, 64))
    np.testing.assert_allclose(kp[:2], -np.ones((2, 2)) / [11, 15] * [48, 64])
    np.testing.assert_array_equal(sc, [0, -1, 1])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="heatmaps"):
        decode_udp_heatmaps(np.zeros((16, 12), np.float32), INPUT)
    with pytest.raises(ValueError, match="keypoints"):
        encode_udp_heatmaps(np.zeros((3,)), INPUT, HEATMAP)
