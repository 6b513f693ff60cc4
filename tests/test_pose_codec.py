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


def _dark_step_on_whole_maps(locations, heatmaps, kernel=11):
    """Reference: the DARK-UDP step with every map blurred whole (the implementation before windowing)."""
    import cv2

    hm = np.asarray(heatmaps, np.float32)
    out = np.asarray(locations, np.float32).copy()
    h, w = hm.shape[-2:]
    for i, (x, y) in enumerate(out.astype(np.int64)):
        if x < 0 or y < 0:
            continue
        blurred = cv2.GaussianBlur(hm[i], (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
        gain = hm[i].max() / blurred.max() if blurred.max() > 0 else np.float32(1)
        xs = np.clip([x - 1, x, x + 1], 0, w - 1)
        ys = np.clip([y - 1, y, y + 1], 0, h - 1)
        p = np.log(np.clip(blurred[np.ix_(ys, xs)] * np.float32(gain), 1e-3, 50.0)).astype(np.float64)
        g = np.array([0.5 * (p[1, 2] - p[1, 0]), 0.5 * (p[2, 1] - p[0, 1])])
        dxy = 0.5 * (p[2, 2] - p[1, 2] - p[2, 1] + 2 * p[1, 1] - p[1, 0] - p[0, 1] + p[0, 0])
        eps = float(np.finfo(np.float32).eps)
        hess = np.array([[p[1, 2] - 2 * p[1, 1] + p[1, 0] + eps, dxy], [dxy, p[2, 1] - 2 * p[1, 1] + p[0, 1] + eps]])
        out[i] = out[i] - np.linalg.solve(hess, g)
    return out


@pytest.mark.parametrize("shape", [(256, 192), (64, 48), (23, 17)])
def test_windowed_dark_step_equals_blurring_whole_maps(codec_case, shape):
    """Peaks anywhere (corners and edges included), second peaks that defeat the window's proof, pure noise."""
    from sapiens2.tasks.pose.codec import refine_dark_udp

    rng = np.random.default_rng(sum(shape))
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w // 2, 0], [0, h // 2]], np.float32)
    points = np.concatenate([corners, rng.uniform(0, [w - 1, h - 1], (40, 2))]).astype(np.float32)
    maps, _ = encode_udp_heatmaps(points * [(768 - 1) / (w - 1), (1024 - 1) / (h - 1)], (768, 1024), (w, h),
                                  sigma=rng.uniform(1.0, 6.0))
    maps = maps + rng.normal(0, 0.02, maps.shape).astype(np.float32)
    maps[-5:] = rng.normal(0, 1, (5, h, w))  # noise: the maximum of the blur can be anywhere
    twin = maps[-10:-5]
    twin += np.roll(twin, (h // 3, w // 3), axis=(1, 2)) * np.float32(0.99)  # a second, nearly equal peak
    locations, _ = heatmap_maxima(maps)
    # Rounding differences (~3e-8 in the blur) are amplified only by a near-singular Hessian (noise maps).
    np.testing.assert_allclose(refine_dark_udp(locations, maps), _dark_step_on_whole_maps(locations, maps),
                               rtol=1e-5, atol=1e-4)
    if shape == (256, 192):  # the official case too
        noisy = codec_case["heatmaps_noisy"]
        loc, _ = heatmap_maxima(noisy)
        np.testing.assert_allclose(refine_dark_udp(loc, noisy), _dark_step_on_whole_maps(loc, noisy), rtol=0,
                                   atol=1e-5)


def _decode_on_whole_maps(heatmaps, input_size):
    """Reference decode: flat argmax (first occurrence) then the DARK step with every map blurred whole."""
    h, w = heatmaps.shape[-2:]
    flat = np.asarray(heatmaps, np.float32).reshape(-1, h, w)
    index = flat.reshape(len(flat), -1).argmax(axis=1)
    scores = flat.reshape(len(flat), -1).max(axis=1)
    locations = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    locations[scores <= 0] = -1
    refined = _dark_step_on_whole_maps(locations, flat)
    return refined.reshape(heatmaps.shape[:-2] + (2,)), scores.reshape(heatmaps.shape[:-2])


def _test_maps(rng, h, w, people=2):
    """(people, K, h, w): peaks anywhere (corners and edges), twin peaks, pure noise, an empty and a negative map."""
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w // 2, 0], [0, h // 2], [w - 1, h // 2],
                        [w // 2, h - 1]], np.float32)
    out = []
    for _ in range(people):
        points = np.concatenate([corners, rng.uniform(0, [w - 1, h - 1], (30, 2))]).astype(np.float32)
        maps, _ = encode_udp_heatmaps(points * [(768 - 1) / (w - 1), (1024 - 1) / (h - 1)], (768, 1024), (w, h),
                                      sigma=rng.uniform(1.0, 6.0))
        maps = maps + rng.normal(0, 0.02, maps.shape).astype(np.float32)
        maps[-4:] = rng.normal(0, 1, (4, h, w))
        maps[-8:-4] += np.roll(maps[-8:-4], (h // 3, w // 3), axis=(1, 2)) * np.float32(0.99)
        maps[-9] = 0
        maps[-10] = -1
        out.append(maps)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(256, 192), (64, 48), (23, 17)])
def test_decode_equals_whole_map_decode_in_chunks(monkeypatch, shape):
    """The one-pass decode (a chunk of maps at a time, windows blurred together) against the whole-map decode,
    with chunks that split the people and leave a short last chunk."""
    from sapiens2.tasks.pose import codec

    h, w = shape
    monkeypatch.setattr(codec, "_CHUNK_BYTES", 4 * h * w * 7)  # 7 maps a chunk: 76 maps -> 11 chunks
    maps = _test_maps(np.random.default_rng(h), h, w)
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    ref_locs, ref_sc = _decode_on_whole_maps(maps, INPUT)
    np.testing.assert_array_equal(sc, ref_sc)
    to_heatmap = np.float32([(w - 1) / INPUT[0], (h - 1) / INPUT[1]])
    # in heatmap pixels: rounding (~3e-8 in the blur) is amplified only by a near-singular Hessian (noise maps)
    np.testing.assert_allclose(kp * to_heatmap, ref_locs, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(kp[:, -10:-8], np.broadcast_to(-1 / to_heatmap, (2, 2, 2)), rtol=1e-6)  # no peak


def test_decode_only_the_requested_keypoints():
    """``keypoints=``: indices (any order, repeats) or a boolean mask give exactly those channels of the full decode."""
    maps = _test_maps(np.random.default_rng(5), 64, 48)
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    index = np.array([37, 0, 5, 5, 30])
    sub_kp, sub_sc = decode_udp_heatmaps(maps, INPUT, keypoints=index)
    assert sub_kp.shape == (2, 5, 2) and sub_sc.shape == (2, 5)
    np.testing.assert_allclose(sub_kp, kp[:, index], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(sub_sc, sc[:, index])
    mask = np.zeros(maps.shape[1], bool)
    mask[[3, 9]] = True
    mask_kp, mask_sc = decode_udp_heatmaps(maps[0], INPUT, keypoints=mask)
    np.testing.assert_allclose(mask_kp, kp[0, [3, 9]], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(mask_sc, sc[0, [3, 9]])
    empty_kp, empty_sc = decode_udp_heatmaps(maps, INPUT, keypoints=[])
    assert empty_kp.shape == (2, 0, 2) and empty_sc.shape == (2, 0)
    with pytest.raises(ValueError, match=r"0\.\.37"):
        decode_udp_heatmaps(maps, INPUT, keypoints=[38])
    with pytest.raises(ValueError, match="one entry per heatmap channel"):
        decode_udp_heatmaps(maps, INPUT, keypoints=np.ones(3, bool))


@pytest.mark.parametrize("shape", [(256, 192), (64, 48)])
def test_decode_is_bit_identical_to_blurring_whole_maps(monkeypatch, shape):
    """At the pose models' heatmap sizes the windowed decode equals, bit for bit, the same decode with every map
    blurred whole (``whole_maps=True``, the benchmark's "before"): windows cut at every border, maps whose window
    cannot prove the blurred maximum (twin peaks, noise), empty and negative maps, chunks that split the maps.
    (Widths that are not a multiple of OpenCV's vector width blur their last columns in its scalar loop: there
    the tests above allow float32 rounding.)"""
    from sapiens2.tasks.pose import codec
    from sapiens2.tasks.pose.codec import refine_dark_udp

    h, w = shape
    monkeypatch.setattr(codec, "_CHUNK_BYTES", 4 * h * w * 9)
    maps = _test_maps(np.random.default_rng(w), h, w)
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    flat = maps.reshape(-1, h, w)
    index = flat.reshape(len(flat), -1).argmax(axis=1)
    scores = flat.reshape(len(flat), -1).max(axis=1)
    locations = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    locations[scores <= 0] = -1
    refined = refine_dark_udp(locations, flat, whole_maps=True)
    expected = (refined.astype(np.float64) / [w - 1, h - 1] * INPUT).astype(np.float32).reshape(kp.shape)
    np.testing.assert_array_equal(sc, scores.reshape(sc.shape))
    np.testing.assert_array_equal(kp, expected)
    # the windowed refinement at given locations too
    np.testing.assert_array_equal(refine_dark_udp(locations, flat), refined)
