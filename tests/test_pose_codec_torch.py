"""The torch DARK-UDP decode (run on the device that holds the heatmaps) against the NumPy decode."""
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps
from sapiens2.tasks.pose.codec_torch import decode_udp_heatmaps_torch, gaussian_kernel_1d

INPUT = (768, 1024)


def _maps(shape, seed, batch=2, per=12):
    """Gaussian peaks anywhere (edges and corners too) plus noise; the last two channels pure noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    points = rng.uniform(0, [w - 1, h - 1], (batch * per, 2)).astype(np.float32)
    points[:4] = [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]
    maps = np.stack([encode_udp_heatmaps(p[None] * [(767) / (w - 1), (1023) / (h - 1)], INPUT, (w, h),
                                         sigma=float(rng.uniform(1.5, 4.0)))[0][0] for p in points])
    maps = maps + rng.normal(0, 0.02, maps.shape).astype(np.float32)
    maps[-2:] = rng.normal(0, 1, (2, h, w))
    return maps.reshape(batch, per, h, w).astype(np.float32)


def test_kernel_is_opencvs():
    cv2 = pytest.importorskip("cv2")
    for size in (3, 5, 11, 13):
        np.testing.assert_array_equal(gaussian_kernel_1d(size), cv2.getGaussianKernel(size, 0, ktype=cv2.CV_32F)
                                      .reshape(-1))


def test_official_fixture_equals_numpy_decode(official_dir):
    hm = load_file(official_dir / "pose-codec.safetensors")["heatmaps_noisy"]
    kp, sc = decode_udp_heatmaps(hm, INPUT)
    kp_t, sc_t = decode_udp_heatmaps_torch(torch.from_numpy(hm), INPUT)
    assert kp_t.shape == kp.shape and kp_t.dtype == np.float32
    np.testing.assert_array_equal(sc_t, sc)  # the raw maxima: exact
    # float32 rounding of the blur (different summation order than OpenCV) moves the step by ~1e-7 heatmap px
    np.testing.assert_allclose(kp_t, kp, rtol=0, atol=1e-6 * max(INPUT) * 2)


@pytest.mark.parametrize("shape", [(64, 48), (23, 17)])
def test_random_heatmaps_equal_numpy_decode(shape):
    maps = _maps(shape, seed=sum(shape))
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    kp_t, sc_t = decode_udp_heatmaps_torch(torch.from_numpy(maps), INPUT)
    np.testing.assert_array_equal(sc_t, sc)
    # in heatmap pixels, as the NumPy decode's own windowed-vs-whole test (rtol 1e-5, atol 1e-4): rounding is
    # amplified only by near-singular Hessians (the noise channels)
    scale = np.array([INPUT[0] / (shape[1] - 1), INPUT[1] / (shape[0] - 1)], np.float32)
    np.testing.assert_allclose(kp_t / scale, kp / scale, rtol=1e-5, atol=1e-4)
    smooth = kp[:, :-2] / scale
    np.testing.assert_allclose(kp_t[:, :-2] / scale, smooth, rtol=0, atol=1e-5)


def test_requested_keypoints_only_and_non_positive_maps():
    maps = _maps((32, 24), seed=3, batch=1, per=6)[0]
    maps[2] = -1.0  # no peak: location stays -1 before scaling, as in the NumPy decode
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    sub, sub_sc = decode_udp_heatmaps_torch(torch.from_numpy(maps), INPUT, keypoints=[4, 2, 0])
    assert sub.shape == (3, 2)
    np.testing.assert_allclose(sub, kp[[4, 2, 0]], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(sub_sc, sc[[4, 2, 0]])
    np.testing.assert_allclose(sub[1], [-INPUT[0] / 23, -INPUT[1] / 31], rtol=1e-6)
    empty, _ = decode_udp_heatmaps_torch(torch.from_numpy(maps), INPUT, keypoints=[])
    assert empty.shape == (0, 2)
    with pytest.raises(ValueError, match="keypoint indices"):
        decode_udp_heatmaps_torch(torch.from_numpy(maps), INPUT, keypoints=[6])
    with pytest.raises(TypeError, match="torch.Tensor"):
        decode_udp_heatmaps_torch(maps, INPUT)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decode_equals_numpy_decode():
    maps = _maps((64, 48), seed=7)
    kp, sc = decode_udp_heatmaps(maps, INPUT)
    kp_t, sc_t = decode_udp_heatmaps_torch(torch.from_numpy(maps).cuda(), INPUT)
    scale = np.array([INPUT[0] / 47, INPUT[1] / 63], np.float32)
    np.testing.assert_array_equal(sc_t, sc)
    np.testing.assert_allclose(kp_t / scale, kp / scale, rtol=1e-5, atol=1e-4)
