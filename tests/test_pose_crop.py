import cv2
import numpy as np
import pytest
import torch
from conftest import rel_err
from safetensors.numpy import load_file

from sapiens2.tasks.pose.crop import (boxes_to_center_size, crop_boxes, crop_to_image, decoded_to_image,
                                      fix_aspect_ratio, image_to_crop, udp_warp_matrix, warp_interpolation,
                                      warp_to_crop)


def test_center_size_warp_matches_official(official_dir):
    case = load_file(official_dir / "pose-codec.safetensors")
    centers, sizes = boxes_to_center_size(case["boxes_xyxy"])
    matrices = udp_warp_matrix(centers, sizes)
    assert matrices.shape == (3, 2, 3) and matrices.dtype == np.float32
    got = np.concatenate([centers, sizes, matrices.reshape(3, 6)], axis=1)
    ref = case["center_size_warp"]
    assert rel_err(torch.from_numpy(got), torch.from_numpy(ref)) < 1e-4
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=1e-6)  # centre and size exactly


def test_aspect_fix_both_ways():
    # too narrow -> widened to 0.75 h; too wide -> heightened to w / 0.75
    np.testing.assert_allclose(fix_aspect_ratio(np.array([[100.0, 400.0], [600.0, 400.0]]), 0.75),
                               [[300.0, 400.0], [600.0, 800.0]])
    _, sizes = boxes_to_center_size(np.array([[0.0, 0.0, 100.0, 400.0]]))
    np.testing.assert_allclose(sizes, [[375.0, 500.0]])  # x1.25 padding, then aspect


def test_warp_then_inverse_round_trip():
    rng = np.random.default_rng(1)
    boxes = np.array([[10.0, 20.0, 200.0, 500.0], [300.5, 40.25, 330.75, 90.5]])
    centers, sizes = boxes_to_center_size(boxes)
    matrices = udp_warp_matrix(centers, sizes)
    pts = rng.uniform(0, 600, size=(2, 50, 2))
    crop_pts = image_to_crop(pts, matrices)
    np.testing.assert_allclose(crop_to_image(crop_pts, matrices), pts, atol=1e-9)
    # the box corners of the padded, aspect-fixed box land on the crop's first and last pixel (UDP)
    corners = np.stack([centers - sizes / 2, centers + sizes / 2], axis=1)
    np.testing.assert_allclose(image_to_crop(corners, matrices), [[[0, 0], [767, 1023]]] * 2, atol=2e-3)
    # the decode mapping is the warp's inverse up to the UDP input/(input-1) factor
    np.testing.assert_allclose(decoded_to_image(crop_pts * [768 / 767, 1024 / 1023], centers, sizes), pts, atol=1e-3)


def test_warp_places_pixels_where_the_matrix_says():
    image = np.zeros((480, 640, 3), np.uint8)
    image[200, 300] = 255  # one bright pixel
    for box in ([250.0, 150.0, 350.0, 250.0], [0.0, 0.0, 639.0, 479.0]):  # zoom in (cubic) and out (linear)
        crops = crop_boxes(image, np.array([box]))
        assert crops.crops.shape == (1, 1024, 768, 3) and crops.crops.dtype == np.uint8
        expected = image_to_crop(np.array([[[300.0, 200.0]]]), crops.matrices)[0, 0]
        gray = crops.crops[0, :, :, 0].astype(np.float64)
        peak = np.unravel_index(gray.argmax(), gray.shape)
        assert abs(peak[1] - expected[0]) <= 1 and abs(peak[0] - expected[1]) <= 1
        # weighted centre of the blob is sub-pixel accurate
        ys, xs = np.nonzero(gray > 0)
        w = gray[ys, xs]
        assert abs((xs * w).sum() / w.sum() - expected[0]) < 0.5
        assert abs((ys * w).sum() / w.sum() - expected[1]) < 0.5


def test_interpolation_rule():
    centers, sizes = boxes_to_center_size(np.array([[0.0, 0.0, 2000.0, 3000.0], [0.0, 0.0, 100.0, 200.0]]))
    shrink, grow = udp_warp_matrix(centers, sizes)
    assert warp_interpolation(shrink) == cv2.INTER_LINEAR
    assert warp_interpolation(grow) == cv2.INTER_CUBIC


def test_crop_boxes_empty_and_errors():
    image = np.zeros((50, 40, 3), np.uint8)
    empty = crop_boxes(image, np.zeros((0, 4)), input_size=(24, 32))
    assert empty.crops.shape == (0, 32, 24, 3)
    with pytest.raises(ValueError, match="negative size"):
        boxes_to_center_size(np.array([[10.0, 10.0, 5.0, 20.0]]))
    with pytest.raises(ValueError, match="image"):
        warp_to_crop(np.zeros(5), np.eye(2, 3))
