import numpy as np
import pytest
import torch

from sapiens2.data.specs import keypoint_info
from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps
from sapiens2.tasks.pose.flip import flip_heatmaps_back, flip_indices, flip_test_average

INPUT, HEATMAP = (96, 128), (24, 32)  # small crop keeps the test fast; same UDP maths as 768x1024


def test_swap_pairs_real_names():
    info = keypoint_info()
    swap = flip_indices()
    lw, rw = info.index("left_wrist"), info.index("right_wrist")
    assert swap[lw] == rw and swap[rw] == lw
    assert swap[info.index("nose")] == info.index("nose")
    assert swap[info.index("l_center_of_pupil")] == info.index("r_center_of_pupil")
    np.testing.assert_array_equal(swap[swap], np.arange(len(swap)))  # an involution


def test_flip_back_moves_right_wrist_channel_to_left_wrist_and_mirrors():
    info = keypoint_info()
    lw, rw = info.index("left_wrist"), info.index("right_wrist")
    mirrored = np.zeros((308, 4, 6), np.float32)
    mirrored[rw, 1, 0] = 1.0  # the model saw a right wrist at x=0 in the mirrored crop
    back = flip_heatmaps_back(mirrored)
    assert back[lw, 1, 5] == 1.0 and back.sum() == 1.0  # it is the left wrist, at the mirrored x


def test_flip_test_recovers_a_pose_and_matches_torch():
    """Encode a pose, encode its mirror image (mirrored x, left/right labels swapped): the flip-test average
    equals the original heatmaps and decodes to the original keypoints."""
    rng = np.random.default_rng(3)
    swap = flip_indices()
    kps = rng.uniform([10, 10], [85, 117], size=(308, 2)).astype(np.float32)
    heatmaps, _ = encode_udp_heatmaps(kps, INPUT, HEATMAP, sigma=2.0)
    mirrored_kps = kps[swap].copy()
    mirrored_kps[:, 0] = (INPUT[0] - 1) - mirrored_kps[:, 0]  # UDP: pixel x -> (w - 1) - x
    mirrored, _ = encode_udp_heatmaps(mirrored_kps, INPUT, HEATMAP, sigma=2.0)
    fused = flip_test_average(heatmaps, mirrored)
    np.testing.assert_allclose(fused, heatmaps, atol=1e-5)
    kp_fused, _ = decode_udp_heatmaps(fused, INPUT)
    kp_plain, _ = decode_udp_heatmaps(heatmaps, INPUT)
    np.testing.assert_allclose(kp_fused, kp_plain, atol=1e-3)
    fused_t = flip_test_average(torch.from_numpy(heatmaps)[None], torch.from_numpy(mirrored)[None])
    np.testing.assert_allclose(fused_t[0].numpy(), fused, atol=1e-7)


def test_average_of_asymmetric_pair_is_the_mean():
    swap = np.array([1, 0, 2])
    plain = np.zeros((3, 2, 3), np.float32)
    plain[0, 0, 0] = 1.0
    mirrored = np.zeros((3, 2, 3), np.float32)
    mirrored[1, 0, 1] = 1.0  # flipped back: channel 0, x = 1
    fused = flip_test_average(plain, mirrored, swap)
    assert fused[0, 0, 0] == 0.5 and fused[0, 0, 1] == 0.5 and fused.sum() == 1.0


def test_shape_errors():
    with pytest.raises(ValueError, match="K = 308"):
        flip_heatmaps_back(np.zeros((17, 4, 4)))
    with pytest.raises(ValueError, match="one shape"):
        flip_test_average(np.zeros((308, 4, 4)), np.zeros((308, 4, 5)))
