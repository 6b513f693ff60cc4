"""Input conversion, the official resizes and the normalisation of the inference pipelines."""
import cv2
import numpy as np
import pytest
import torch

from sapiens2.io import load_image
from sapiens2.tasks.matting import matting_input
from sapiens2.tasks.preprocess import (PIXEL_MEAN, PIXEL_STD, InputImageError, Padding, as_rgb_image, fit_geometry,
                                       fit_resize_pad, to_model_batch)
from sapiens2.tasks.seg import seg_input


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_padding_geometry_300x500_by_hand():
    # s = min(1024/300, 768/500) = 1.536 -> int(460.8) x int(768.0); 564 rows of padding split 282/282
    assert fit_geometry((300, 500), (1024, 768)) == ((460, 768), Padding(0, 0, 282, 282))
    # s = min(128/300, 96/500) = 0.192 -> 57 x 96; 71 rows: floor 35 on top, ceil 36 below
    assert fit_geometry((300, 500), (128, 96)) == ((57, 96), Padding(0, 0, 35, 36))
    # portrait, odd column padding: s = 1024/500 -> int(681.98) = 681 columns, 87 split 43 / 44
    assert fit_geometry((500, 333), (1024, 768)) == ((1024, 681), Padding(43, 44, 0, 0))


def test_fit_resize_pad_content_and_zero_border():
    img = _image(300, 500)
    out, pad = fit_resize_pad(img, (128, 96))
    assert out.shape == (128, 96, 3) and out.dtype == np.uint8
    assert pad == Padding(0, 0, 35, 36)
    expected = cv2.resize(img, (96, 57), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[35:35 + 57], expected)
    assert not out[:35].any() and not out[35 + 57:].any()


def test_normalisation_values_on_device_batch():
    pixels = np.zeros((1, 2, 2, 3), np.uint8)
    pixels[0, 0, 0] = (255, 0, 128)
    x = to_model_batch(pixels, "cpu")
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    want = [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (128 - 103.53) / 57.375]
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), want, rtol=1e-6)
    # a padded (0) pixel becomes -mean/std per channel
    np.testing.assert_allclose(x[0, :, 1, 1].numpy(), -np.array(PIXEL_MEAN) / np.array(PIXEL_STD), rtol=1e-6)


def test_stretch_interpolation_follows_the_width_rule():
    img = _image(90, 200)
    # width shrinks (200 -> 96): INTER_AREA for seg and matting alike
    np.testing.assert_array_equal(seg_input(img, (128, 96)), cv2.resize(img, (96, 128), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(matting_input(img, (128, 96)),
                                  cv2.resize(img, (96, 128), interpolation=cv2.INTER_AREA))
    small = _image(40, 30)
    # width grows: seg uses INTER_CUBIC, matting INTER_LINEAR
    cubic = cv2.resize(small, (96, 128), interpolation=cv2.INTER_CUBIC)
    linear = cv2.resize(small, (96, 128), interpolation=cv2.INTER_LINEAR)
    assert not np.array_equal(cubic, linear)
    np.testing.assert_array_equal(seg_input(small, (128, 96)), cubic)
    np.testing.assert_array_equal(matting_input(small, (128, 96)), linear)


def test_inputs_gray_rgba_path_and_loaded_image(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb, src = as_rgb_image(gray)
    assert rgb.shape == (3, 4, 3) and src is None
    assert all(np.array_equal(rgb[..., c], gray) for c in range(3))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: unchanged
    rgba[1, 1] = (0, 0, 0, 0)  # transparent: white background
    out, _ = as_rgb_image(rgba)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)

    img = _image(20, 30)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    from_path, src = as_rgb_image(str(path))
    np.testing.assert_array_equal(from_path, img)
    assert src == path
    from_loaded, src2 = as_rgb_image(load_image(path))
    np.testing.assert_array_equal(from_loaded, img)
    assert src2 == path

    assert as_rgb_image(np.full((2, 2), 65535, np.uint16)).rgb.max() == 255


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), 42])
def test_bad_inputs_raise_clear_errors(bad):
    with pytest.raises(InputImageError):
        as_rgb_image(bad)
