"""Full-resolution post-processing in bands of rows: bit for bit the values of the whole-map computation, on odd
sizes, with bands forced down to a row or a few."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapiens2.tasks import upsample as banding
from sapiens2.tasks.dense import albedo_result, normal_result, pointmap_result
from sapiens2.tasks.matting import matting_result
from sapiens2.tasks.preprocess import Padding
from sapiens2.tasks.seg import upsampled_argmax, upsampled_softmax
from sapiens2.tasks.upsample import BandUpsampler, first_argmax
from sapiens2.visualization import _arrays as vis_arrays
from sapiens2.visualization import (albedo_to_uint8, depth_to_rgb, mask_to_uint8, matte_composite, matte_cutout,
                                    normals_to_rgb, overlay_segmentation)

SIZES = [  # (C, h, w) -> (H, W): up, down, one axis unchanged, small outputs, a wide one
    ((3, 7, 5), (230, 31)), ((29, 16, 12), (97, 141)), ((4, 37, 61), (129, 601)), ((1, 50, 7), (50, 161)),
    ((2, 64, 48), (41, 200)), ((5, 9, 9), (9, 9)), ((3, 12, 10), (35, 29)), ((2, 11, 13), (1013, 7)),
]


@pytest.fixture()
def two_torch_threads():
    """F.interpolate's own CPU result depends on the thread count (on one thread some outputs round an ulp apart,
    measured for (3, 7, 5) -> (230, 31)); the bands reproduce the multi-threaded kernel, the default on CI's 2
    cores. Pinned so the comparison does not depend on the machine's core count."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("shape,out", SIZES)
@pytest.mark.parametrize("max_elements", [1, 3 * 29 * 601, None])
def test_bands_equal_f_interpolate_bit_for_bit(shape, out, max_elements, two_torch_threads):
    maps = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(out))) * 5
    whole = F.interpolate(maps[None], size=out, mode="bilinear", align_corners=False)[0]
    up = BandUpsampler(maps, out)
    assert up.exact  # verified on this CPU; other devices fall back to whole maps
    pieces = list(up.bands(max_elements))
    assert pieces[0][0].start == 0 and pieces[-1][0].stop == out[0]
    assert torch.equal(torch.cat([band for _, band in pieces], dim=1), whole)


@pytest.mark.parametrize("shape,out", SIZES[:2])
def test_bands_within_an_ulp_of_f_interpolate_on_one_thread(shape, out, one_torch_thread):
    maps = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(out))) * 5
    whole = F.interpolate(maps[None], size=out, mode="bilinear", align_corners=False)[0]
    banded = torch.cat([band for _, band in BandUpsampler(maps, out).bands(None)], dim=1)
    torch.testing.assert_close(banded, whole, rtol=2e-7, atol=4e-6)


def test_first_argmax_keeps_the_first_of_equal_maxima():
    band = torch.tensor([[[1.0, 2.0]], [[3.0, 2.0]], [[3.0, 0.0]]])
    assert first_argmax(band).tolist() == [[1, 0]]
    x = torch.randn(29, 5, 7)
    assert torch.equal(first_argmax(x), x.argmax(0).to(torch.uint8))


def _odd_case(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(29, 16, 12, generator=gen), (151, 97)


def test_seg_banded_equals_whole(monkeypatch):
    logits, hw = _odd_case()
    ref = F.interpolate(logits[None], size=hw, mode="bilinear", align_corners=False)[0]
    monkeypatch.setattr(banding, "BAND_ELEMENTS", 2 * 29 * hw[1])  # 2-row bands
    np.testing.assert_array_equal(upsampled_argmax(logits, hw).numpy(), ref.argmax(0).numpy())
    banded = upsampled_softmax(logits, hw)
    monkeypatch.setattr(banding, "_verified", lambda device: False)  # the whole-map path
    assert not BandUpsampler(logits, hw).exact
    np.testing.assert_array_equal(upsampled_argmax(logits, hw, budget=3 * hw[0] * hw[1]).numpy(),
                                  ref.argmax(0).numpy())
    np.testing.assert_array_equal(banded, upsampled_softmax(logits, hw))


def test_seg_bands_on_several_threads_equal_one(monkeypatch):
    import sapiens2.tasks.seg as seg

    logits, hw = _odd_case(1)
    logits[:, :6] -= torch.arange(29.0)[:, None, None] * 3  # top rows: class 0 alone (bands filled directly)
    ref = F.interpolate(logits[None], size=hw, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    monkeypatch.setattr(banding, "BAND_ELEMENTS", 3 * 29 * hw[1])  # 3-row bands: 51 of them
    monkeypatch.setattr(seg, "band_workers", lambda device: 1)
    banded = 29 * hw[0] * hw[1] - 1  # a budget the whole map passes: bands
    one = upsampled_argmax(logits, hw, budget=banded).numpy()
    original, calls = seg._argmax_bands, []

    def spy(up, *args):
        calls.append(up)
        return original(up, *args)

    monkeypatch.setattr(seg, "_argmax_bands", spy)
    monkeypatch.setattr(seg, "band_workers", lambda device: 3)
    monkeypatch.setattr(seg, "MIN_BANDS_PER_WORKER", 1)
    np.testing.assert_array_equal(upsampled_argmax(logits, hw, budget=banded).numpy(), ref)
    np.testing.assert_array_equal(one, ref)
    assert len(calls) == 3 and len({id(up) for up in calls}) == 3  # three threads, each its own cache


def _dense_results():
    gen = torch.Generator().manual_seed(3)
    out = torch.randn(3, 16, 12, generator=gen)
    pad = Padding(1, 2, 0, 1)
    hw = (131, 89)
    mask = np.random.default_rng(0).random(hw) > 0.3
    normal = normal_result(out, pad, hw, mask).normals
    albedo = albedo_result(out, pad, hw, mask).albedo
    points = pointmap_result(out, torch.tensor([2.0]), pad, hw, mask).pointmap
    matte = matting_result(torch.rand(4, 16, 12, generator=gen), hw)
    return normal, albedo, points, matte.alpha, matte.foreground


def test_dense_and_matting_banded_equal_whole(monkeypatch):
    monkeypatch.setattr(banding, "BAND_ELEMENTS", 1)  # one row per band
    banded = _dense_results()
    monkeypatch.setattr(banding, "_verified", lambda device: False)  # the whole-map path
    assert not BandUpsampler(torch.zeros(3, 16, 12), (131, 89)).exact
    whole = _dense_results()
    for b, w in zip(banded, whole):
        np.testing.assert_array_equal(b, w)


def _pictures():
    rng = np.random.default_rng(5)
    hw = (67, 45)
    image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    labels = rng.integers(0, 29, hw).astype(np.uint8)
    normals = rng.normal(size=hw + (3,)).astype(np.float32)
    normals[3, 4] = np.nan
    depth = rng.random(hw).astype(np.float32) * 3
    depth[5, :7] = [np.nan, np.inf, -np.inf, 9.0, -2.0, 0.0, 1e-3]  # non-finite values; the range from one band
    mask = rng.random(hw) > 0.2
    mask[5, 3:5] = True
    albedo = rng.random(hw + (3,)).astype(np.float32)
    albedo[7, 2] = np.nan
    alpha = rng.random(hw).astype(np.float32)
    fg = rng.random(hw + (3,)).astype(np.float32) * alpha[..., None]
    return (overlay_segmentation(image, labels), normals_to_rgb(normals, mask), normals_to_rgb(normals),
            depth_to_rgb(depth, mask), depth_to_rgb(depth), depth_to_rgb(depth, mask.astype(np.uint8)),
            depth_to_rgb(depth, value_range=(0.5, 2.0), background=(9, 8, 7)), depth_to_rgb(depth, ~mask & False),
            albedo_to_uint8(albedo, mask), albedo_to_uint8(albedo), albedo_to_uint8(image, mask), mask_to_uint8(alpha),
            matte_composite(image, alpha, foreground=fg), matte_composite(image, alpha, background=image[::-1]),
            matte_cutout(image, alpha, foreground=fg), matte_cutout(image, alpha))


def test_visualisations_banded_equal_whole(monkeypatch):
    monkeypatch.setattr(vis_arrays, "BAND_PIXELS", 1)  # one row per band
    banded = _pictures()
    monkeypatch.setattr(vis_arrays, "BAND_PIXELS", 10**9)  # one band
    for b, w in zip(banded, _pictures()):
        np.testing.assert_array_equal(b, w)


def test_alpha_compositing_banded_equals_whole(monkeypatch):
    import cv2

    from sapiens2.io import images

    rgba = np.random.default_rng(2).integers(0, 256, (41, 23, 4), dtype=np.uint8)
    data = cv2.imencode(".png", rgba)[1].tobytes()
    monkeypatch.setattr(images, "_COMPOSITE_ROWS_PIXELS", 1)  # one row per band
    banded = images.decode_image(data).rgb
    monkeypatch.setattr(images, "_COMPOSITE_ROWS_PIXELS", 10**9)
    np.testing.assert_array_equal(banded, images.decode_image(data).rgb)


def test_band_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with banding.band_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _argmax_cases():
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(29, 5, 301, generator=gen) * 3
    ties = (torch.randn(29, 4, 33, generator=gen) * 1.5).round()  # many equal maxima
    zeros = torch.zeros(4, 3, 5)
    zeros[1::2] = -0.0  # +0 and -0 are equal maxima
    denormal = torch.randint(0, 3, (7, 3, 11), generator=gen).float() * 1e-45  # differences of 2**-149
    big = torch.tensor([[[3.0e38, -3.0e38]], [[-3.0e38, 3.0e38]]])  # v - m overflows to -inf
    return [noise, ties, zeros, denormal, big]


@pytest.mark.parametrize("case", range(5))
def test_ranked_first_argmax_equals_argmax(case):
    band = _argmax_cases()[case]
    assert torch.equal(first_argmax(band), band.argmax(0).to(torch.uint8))
    classes = torch.arange(band.shape[0]) * 7 % 256  # increasing ids up to 196
    classes = torch.sort(classes).values
    assert torch.equal(first_argmax(band, classes=classes), classes[band.argmax(0)].to(torch.uint8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_first_argmax_non_finite_values_as_argmax(bad):
    band = torch.randn(6, 3, 9, generator=torch.Generator().manual_seed(4))
    band.view(-1)[::5] = bad
    band[:, 0, 0] = -float("inf")  # a pixel whose every class is -inf
    assert torch.equal(first_argmax(band), band.argmax(0).to(torch.uint8))


def test_first_argmax_with_denormals_flushed_falls_back():
    band = torch.tensor([[[1.2e-38, 2.0]], [[1.5e-38, 1.0]]])
    torch.set_flush_denormal(True)
    try:
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU cannot flush denormals")
        assert not banding._denormals_kept(band.device)
        assert first_argmax(band).tolist() == [[1, 0]]
    finally:
        torch.set_flush_denormal(False)
    assert banding._denormals_kept(band.device)
