"""The DARK-UDP heatmap decode of :mod:`sapiens2.tasks.pose.codec` in torch, on the device that holds the heatmaps.

Used when the pose model runs on a GPU (CUDA, MPS): the heatmaps stay on the device, only the keypoints asked for
are decoded, and what comes back to the host is a few numbers per keypoint instead of every heatmap (a 1024x768
crop's 308 maps are 60 MB of float32). One transfer (one host sync) per batch of crops.

The steps are the NumPy decode's (first-occurrence argmax, zero-border Gaussian blur with OpenCV's sigma-0 kernel,
rescale to the raw maximum, clip to [1e-3, 50], log, one Newton step from the 3x3 neighbourhood), with the blur
computed on whole maps (the reference the NumPy decode's windowed blur equals up to float32 rounding). The 2x2
solve runs in float64 on the host, as the NumPy decode does (MPS has no float64).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.tasks.pose.codec import keypoint_index

__all__ = ["decode_udp_heatmaps_torch", "gaussian_kernel_1d"]


def gaussian_kernel_1d(size: int) -> np.ndarray:
    """OpenCV's Gaussian kernel for ``GaussianBlur(..., (size, size), 0)`` on float32 images: sigma from OpenCV's
    sigma-0 rule, weights computed in float64, normalised, stored as float32 (``cv2.getGaussianKernel(size, 0)``
    for sizes above 7, which use no fixed table)."""
    if size % 2 != 1 or size < 3:
        raise ValueError(f"blur_kernel_size must be odd and >= 3, got {size}")
    if size <= 7:  # OpenCV's fixed small-kernel tables
        import cv2

        return cv2.getGaussianKernel(size, 0, ktype=cv2.CV_32F).reshape(-1)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _blur(maps: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """(M, H, W) -> the separable blur with zeros outside each map (conv2d's zero padding)."""
    k = torch.as_tensor(kernel, dtype=maps.dtype, device=maps.device)
    pad = len(kernel) // 2
    x = maps[:, None]
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, pad))  # rows (along W), as OpenCV's sepFilter does first
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(pad, 0))
    return x[:, 0]


def decode_udp_heatmaps_torch(heatmaps: torch.Tensor, input_size: tuple[int, int] = (768, 1024),
                              blur_kernel_size: int = 11, keypoints=None
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and scores from heatmaps (K, H, W) or (B, K, H, W) on any device; the NumPy decode's results.

    ``keypoints``: indices (or a boolean mask) of the channels to decode (default all); the results then hold those channels only, in
    the given order. Returns NumPy arrays on the host: keypoints (..., K', 2) float32 as
    ``xy / (heatmap_size - 1) * input_size`` (see :func:`sapiens2.tasks.pose.codec.decode_udp_heatmaps`) and
    scores (..., K') float32; a channel whose maximum is <= 0 keeps location -1 before scaling.
    """
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"heatmaps must be a torch.Tensor, got {type(heatmaps).__name__} (use codec.decode_udp_"
                        "heatmaps for NumPy arrays)")
    if heatmaps.ndim not in (3, 4):
        raise ValueError(f"heatmaps must be (K, H, W) or (B, K, H, W), got shape {tuple(heatmaps.shape)}")
    if len(input_size) != 2 or min(input_size) < 2:
        raise ValueError(f"input_size must be (width, height) with both sides >= 2, got {input_size!r}")
    in_w, in_h = int(input_size[0]), int(input_size[1])
    h, w = heatmaps.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps must be at least 2x2, got {h}x{w}")
    kernel = gaussian_kernel_1d(blur_kernel_size)
    hm = heatmaps
    if keypoints is not None:
        index = torch.from_numpy(keypoint_index(keypoints, hm.shape[-3]))
        hm = hm.index_select(-3, index.to(hm.device))
    lead = tuple(hm.shape[:-2])
    with torch.inference_mode():
        flat = hm.detach().reshape(-1, h, w).float()
        m = flat.shape[0]
        if m == 0:
            return np.zeros(lead + (2,), np.float32), np.zeros(lead, np.float32)
        scores = flat.reshape(m, -1).amax(dim=1)
        arg = flat.reshape(m, -1).argmax(dim=1)  # the first maximum in row-major order, as NumPy's argmax
        y, x = arg // w, arg % w
        blurred = _blur(flat, kernel)
        blurred_max = blurred.reshape(m, -1).amax(dim=1)
        positive = blurred_max > 0
        gain = torch.where(positive, scores / torch.where(positive, blurred_max, torch.ones_like(blurred_max)),
                           torch.ones_like(blurred_max))
        offsets = torch.tensor([-1, 0, 1], device=flat.device)
        xs = (x[:, None] + offsets).clamp(0, w - 1)  # edge padding by one pixel == clamped neighbours
        ys = (y[:, None] + offsets).clamp(0, h - 1)
        rows = torch.arange(m, device=flat.device)[:, None, None]
        patch = blurred[rows, ys[:, :, None], xs[:, None, :]]  # (M, 3, 3) [dy, dx]
        patch = torch.log((patch * gain[:, None, None]).clamp(1e-3, 50.0))
        c = patch[:, 1, 1]
        derivatives = torch.stack([
            0.5 * (patch[:, 1, 2] - patch[:, 1, 0]),  # dx
            0.5 * (patch[:, 2, 1] - patch[:, 0, 1]),  # dy
            patch[:, 1, 2] - 2 * c + patch[:, 1, 0],  # dxx
            patch[:, 2, 1] - 2 * c + patch[:, 0, 1],  # dyy
            0.5 * (patch[:, 2, 2] - patch[:, 1, 2] - patch[:, 2, 1] + 2 * c
                   - patch[:, 1, 0] - patch[:, 0, 1] + patch[:, 0, 0]),  # dxy
            x.float(), y.float(), scores,
        ], dim=1)
        host = derivatives.cpu().numpy()  # the one transfer: 8 numbers per keypoint
    dx, dy, dxx, dyy, dxy, px, py, sc = (host[:, i] for i in range(8))
    eps = float(np.finfo(np.float32).eps)
    a = dxx.astype(np.float64) + eps
    d = dyy.astype(np.float64) + eps
    b = dxy.astype(np.float64)
    det = a * d - b * b
    ok = np.isfinite(det) & (det != 0)  # a flat log-map gets no step, as in the NumPy decode
    safe = np.where(ok, det, 1.0)
    step_x = np.where(ok, (d * dx - b * dy) / safe, 0.0)
    step_y = np.where(ok, (a * dy - b * dx) / safe, 0.0)
    valid = sc > 0
    loc_x = np.where(valid, (px - step_x).astype(np.float32), np.float32(-1))
    loc_y = np.where(valid, (py - step_y).astype(np.float32), np.float32(-1))
    out = np.stack([loc_x.astype(np.float64) / (w - 1) * in_w, loc_y.astype(np.float64) / (h - 1) * in_h], axis=-1)
    return out.astype(np.float32).reshape(lead + (2,)), sc.astype(np.float32).reshape(lead)

