"""Normal, pointmap and albedo pipelines (official ``vis_normal`` / ``vis_pointmap`` / ``vis_albedo``).

Input: resize keeping the aspect ratio to fit the model input (INTER_LINEAR), centred zero padding.
Output: crop the padding away, bilinear (align_corners=False) to the original size, then per task:
- normal: L2-normalised (clamp 1e-8) at model resolution as the official tool does, and again after upsampling
  so that every pixel is a unit vector;
- pointmap: raw / scale = metric metres; before upsampling to a larger size the official tool smooths 4x with a
  3x3 Gaussian (sigma 0.8, reflect border, torchvision's ``gaussian_blur``);
- albedo: clamped to [0, 1].
A foreground mask (seg class > 0), when given, sets the background to 0.

Upsampling goes a band of output rows at a time straight into the float32 result (:mod:`sapiens2.tasks.upsample`,
bit for bit equal to ``F.interpolate`` of the whole map), and each band is finished (renormalised, clipped,
masked) while it is in cache, so a huge original costs a few MB of temporaries beyond the result itself.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.tasks.preprocess import Padding, fit_resize_pad
from sapiens2.tasks.results import AlbedoResult, NormalResult, PointmapResult
from sapiens2.tasks.upsample import BandUpsampler, band_threads

__all__ = ["dense_input", "crop_padding", "upsample_to_hwc", "unit_range", "gaussian_smooth", "normal_result",
           "pointmap_result", "albedo_result", "POINTMAP_SMOOTH"]

POINTMAP_SMOOTH = {"kernel_size": 3, "sigma": 0.8, "iterations": 4}  # official resize_pointmap(smooth=True)
_NORMAL_EPS = 1e-8
_ROW_BAND = 1024  # rows per step of the in-place full-resolution passes where the maps are upsampled whole
BandFinish = Callable[[np.ndarray, slice], None]  # (band of the (H, W, C) result, its rows) -> finished in place


def dense_input(rgb: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Padding]:
    """(H, W, 3) uint8 -> (input_h, input_w, 3) uint8 model input and the padding it holds."""
    return fit_resize_pad(rgb, input_hw)


def crop_padding(maps: torch.Tensor, padding: Padding) -> torch.Tensor:
    """(C, h, w) model output -> the part that covers the image (padding removed)."""
    rows, cols = padding.crop_slices(maps.shape[-2], maps.shape[-1])
    return maps[..., rows, cols]


def upsample_to_hwc(maps: torch.Tensor, image_hw: tuple[int, int], finish: BandFinish | None = None) -> np.ndarray:
    """(C, h, w) -> (H, W, C) float32 NumPy, bilinear (align_corners=False), a band of rows at a time;
    ``finish(band, rows)`` is applied to each band of the result in place (per-pixel steps only)."""
    out = np.empty(tuple(image_hw) + (maps.shape[0],), np.float32)
    up = BandUpsampler(maps, image_hw)
    if up.exact:
        with band_threads(maps.device):
            for rows, band in up.bands():
                out[rows] = band.permute(1, 2, 0).cpu().numpy()
                if finish is not None:
                    finish(out[rows], rows)
        return out
    same = tuple(maps.shape[-2:]) == tuple(image_hw)
    for c in range(maps.shape[0]):  # whole planes, one channel at a time
        plane = maps[c:c + 1].float()
        if not same:
            plane = F.interpolate(plane[None], size=tuple(image_hw), mode="bilinear", align_corners=False)[0]
        out[..., c] = plane[0].cpu().numpy()
    if finish is not None:
        for top in range(0, out.shape[0], _ROW_BAND):
            finish(out[top:top + _ROW_BAND], slice(top, top + _ROW_BAND))
    return out


def _gaussian_kernel(kernel_size: int, sigma: float, device, dtype) -> torch.Tensor:
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel_size, device=device, dtype=dtype)
    k1 = torch.exp(-0.5 * (x / sigma).pow(2))
    k1 = k1 / k1.sum()
    return k1[:, None] * k1[None, :]


def gaussian_smooth(maps: torch.Tensor, kernel_size: int = 3, sigma: float = 0.8, iterations: int = 1) -> torch.Tensor:
    """Separable-kernel Gaussian blur of each channel of (C, h, w), reflect border (as torchvision's
    ``gaussian_blur``), repeated ``iterations`` times."""
    c = maps.shape[0]
    x = maps.float()[None]
    kernel = _gaussian_kernel(kernel_size, sigma, x.device, x.dtype).expand(c, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    # reflect needs more than `pad` pixels per side; tiny maps fall back to edge replication
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    for _ in range(iterations):
        x = F.conv2d(F.pad(x, [pad, pad, pad, pad], mode=mode), kernel, groups=c)
    return x[0]


def _finisher(mask: np.ndarray | None, *steps: Callable[[np.ndarray], None]) -> BandFinish:
    """Per-band finishing: ``steps`` in order, then the background (outside ``mask``) set to 0."""
    def finish(band: np.ndarray, rows: slice) -> None:
        for step in steps:
            step(band)
        if mask is not None:
            band[~mask[rows]] = 0
    return finish


def _unit_length(band: np.ndarray) -> None:
    """Bilinear mixing shortens vectors: renormalise (H', W, 3) normals in place."""
    length = np.sqrt(np.einsum("...c,...c->...", band, band))
    band /= np.maximum(length, _NORMAL_EPS)[..., None]


def unit_range(band: np.ndarray) -> None:
    np.clip(band, 0.0, 1.0, out=band)  # bilinear weights can overshoot 1 by an ulp


def _check_mask(mask: np.ndarray | None, image_hw: tuple[int, int]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask).astype(bool, copy=False)
    if m.shape != tuple(image_hw):
        raise ValueError(f"foreground mask of shape {m.shape} does not match the image {tuple(image_hw)}")
    return m


def normal_result(output: torch.Tensor, padding: Padding, image_hw: tuple[int, int],
                  mask: np.ndarray | None = None) -> NormalResult:
    """Raw normal output (3, h, w) of one image -> unit normals (H, W, 3) at the original size."""
    mask = _check_mask(mask, image_hw)
    n = output.float()
    # the length as a sum of channel planes: torch's norm over the leading dim of 3 took 30x longer (70 ms at 1 MP)
    n = n / (n * n).sum(dim=0, keepdim=True).sqrt_().clamp_(min=_NORMAL_EPS)
    normals = upsample_to_hwc(crop_padding(n, padding), image_hw, _finisher(mask, _unit_length))
    return NormalResult(normals=normals, mask=mask)


def pointmap_result(output: torch.Tensor, scale: torch.Tensor, padding: Padding, image_hw: tuple[int, int],
                    mask: np.ndarray | None = None, smooth: bool = True) -> PointmapResult:
    """Raw pointmap (3, h, w) and its scale (1,) of one image -> metric XYZ (H, W, 3) at the original size."""
    mask = _check_mask(mask, image_hw)
    s = scale.float().reshape(-1)[0]
    metric = crop_padding(output.float() / s, padding)
    if smooth and (image_hw[0] > metric.shape[-2] or image_hw[1] > metric.shape[-1]):
        metric = gaussian_smooth(metric, POINTMAP_SMOOTH["kernel_size"], POINTMAP_SMOOTH["sigma"],
                                 POINTMAP_SMOOTH["iterations"])
    points = upsample_to_hwc(metric, image_hw, _finisher(mask))
    return PointmapResult(pointmap=points, scale=float(s.item()), mask=mask)


def albedo_result(output: torch.Tensor, padding: Padding, image_hw: tuple[int, int],
                  mask: np.ndarray | None = None) -> AlbedoResult:
    """Raw albedo (3, h, w) of one image -> RGB albedo (H, W, 3) in [0, 1] at the original size."""
    mask = _check_mask(mask, image_hw)
    albedo = upsample_to_hwc(crop_padding(output.float().clamp(0, 1), padding), image_hw,
                             _finisher(mask, unit_range))
    return AlbedoResult(albedo=albedo, mask=mask)
