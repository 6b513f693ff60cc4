"""Normal, pointmap, albedo and matting pipelines: padding, cropping, upsampling, task post-processing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sapiens2.models.task_model import build_model
from sapiens2.tasks.dense import dense_input, gaussian_smooth
from sapiens2.tasks.matting import matting_input
from sapiens2.inference.predictor import Predictor
from sapiens2.tasks.preprocess import to_model_batch

INPUT_HW = (128, 96)
POINTMAP_HW = (256, 192)  # the scale branch needs at least a 16x12 token grid


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(2)
    out = {t: build_model(t, "sapiens2_tiny", img_size=INPUT_HW).eval() for t in ("normal", "albedo", "matting")}
    out["pointmap"] = build_model("pointmap", "sapiens2_tiny", img_size=POINTMAP_HW).eval()
    return out


def _raw(model, x_uint8):
    with torch.inference_mode():
        return model(to_model_batch(x_uint8[None]))


def test_normals_unit_length_at_original_size_and_match_hand_pipeline(models):
    img = _image(150, 250)
    pred = Predictor("normal", model=models["normal"], device="cpu", input_size=INPUT_HW).predict(img)
    normals = pred.normal.normals
    assert normals.shape == (150, 250, 3) and normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert pred.normal.mask is None
    # by hand: s = min(128/150, 96/250) -> 57x96 content, 35 + 36 rows of padding; normalise, crop, upsample
    x, pad = dense_input(img, INPUT_HW)
    raw = _raw(models["normal"], x)[0]
    n = raw / raw.norm(dim=0, keepdim=True).clamp(min=1e-8)
    n = n[:, pad.top:INPUT_HW[0] - pad.bottom, pad.left:INPUT_HW[1] - pad.right]
    assert n.shape[1:] == (57, 96)
    up = F.interpolate(n[None], size=(150, 250), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    up = up / np.linalg.norm(up, axis=-1, keepdims=True)
    np.testing.assert_allclose(normals, up, atol=1e-6)


def test_pointmap_is_raw_over_scale_cropped_and_upsampled(models):
    img = _image(60, 100, seed=4)  # smaller than the model input: no smoothing (official: only when enlarging)
    pred = Predictor("pointmap", model=models["pointmap"], device="cpu").predict(img)
    pm = pred.pointmap
    assert pm.pointmap.shape == (60, 100, 3) and pm.pointmap.dtype == np.float32
    x, pad = dense_input(img, POINTMAP_HW)
    raw, scale = _raw(models["pointmap"], x)
    assert pm.scale == pytest.approx(scale.item(), rel=1e-6)
    metric = (raw[0] / scale[0, 0])[:, pad.top:POINTMAP_HW[0] - pad.bottom, pad.left:POINTMAP_HW[1] - pad.right]
    ref = F.interpolate(metric[None], size=(60, 100), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(pm.pointmap, ref.permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pm.depth, pm.pointmap[..., 2])


def test_pointmap_enlarging_uses_four_gaussian_passes(models):
    img = _image(300, 500, seed=5)  # crop 114x192 -> 300x500: enlarging, so the official smoothing applies
    pm = Predictor("pointmap", model=models["pointmap"], device="cpu").predict(img).pointmap
    x, pad = dense_input(img, POINTMAP_HW)
    raw, scale = _raw(models["pointmap"], x)
    metric = (raw[0] / scale[0, 0])[:, pad.top:POINTMAP_HW[0] - pad.bottom, pad.left:POINTMAP_HW[1] - pad.right]
    smooth = metric.numpy().astype(np.float64)
    k1 = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / 0.8) ** 2)
    k1 /= k1.sum()
    for _ in range(4):  # 3x3 Gaussian, sigma 0.8, reflect border (torchvision gaussian_blur), by hand
        p = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), mode="reflect")
        smooth = sum(k1[i] * k1[j] * p[:, i:i + smooth.shape[1], j:j + smooth.shape[2]]
                     for i in range(3) for j in range(3))
    np.testing.assert_allclose(gaussian_smooth(metric, 3, 0.8, 4).numpy(), smooth, rtol=1e-4, atol=1e-5)
    ref = F.interpolate(torch.from_numpy(smooth).float()[None], size=(300, 500), mode="bilinear",
                        align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(pm.pointmap, ref, rtol=1e-4, atol=1e-5)
    unsmoothed = F.interpolate(metric[None], size=(300, 500), mode="bilinear", align_corners=False)[0]
    assert not np.allclose(pm.pointmap, unsmoothed.permute(1, 2, 0).numpy(), rtol=1e-4, atol=1e-5)


def test_albedo_clipped_to_unit_range(models):
    img = _image(150, 250, seed=6)
    albedo = Predictor("albedo", model=models["albedo"], device="cpu", input_size=INPUT_HW).predict(img).albedo
    assert albedo.albedo.shape == (150, 250, 3) and albedo.albedo.dtype == np.float32
    assert albedo.albedo.min() >= 0.0 and albedo.albedo.max() <= 1.0
    x, pad = dense_input(img, INPUT_HW)
    raw = _raw(models["albedo"], x)[0].clamp(0, 1)[:, pad.top:INPUT_HW[0] - pad.bottom]
    ref = F.interpolate(raw[None], size=(150, 250), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(albedo.albedo, ref.permute(1, 2, 0).numpy().clip(0, 1), atol=1e-6)


def test_matting_alpha_and_foreground(models):
    img = _image(150, 250, seed=7)
    m = Predictor("matting", model=models["matting"], device="cpu", input_size=INPUT_HW).predict(img).matting
    assert m.alpha.shape == (150, 250) and m.foreground.shape == (150, 250, 3)
    assert m.alpha.dtype == np.float32 and m.foreground.dtype == np.float32
    assert 0.0 <= m.alpha.min() and m.alpha.max() <= 1.0
    assert 0.0 <= m.foreground.min() and m.foreground.max() <= 1.0
    out = _raw(models["matting"], matting_input(img, INPUT_HW))
    ref = F.interpolate(out, size=(150, 250), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    np.testing.assert_allclose(m.alpha, ref[3].numpy(), atol=1e-6)
    np.testing.assert_allclose(m.foreground, ref[:3].permute(1, 2, 0).numpy(), atol=1e-6)
