"""Resampling between the teacher's and the student's grids, in each task's pixel convention.

Pose crops and heatmaps follow UDP (unbiased data processing): the crop warp maps the person box onto
``[0, W - 1]`` and the codec maps heatmap pixel ``i`` to input pixel ``i * (W - 1) / (w - 1)``, i.e. *corner*
alignment. A pose item built at the teacher's size and resized to the student's must therefore be resized with
corner alignment, and so must the teacher's heatmaps onto the student's heatmap grid; otherwise every keypoint the
student learns is shifted by up to ~0.8 student pixels towards the crop centre (the edges of a 64 -> 32 grid).
Seg images are plain resizes of the whole image and logits are upsampled with half-pixel alignment everywhere
(predict, eval, the losses), so seg uses ``align_corners=False``.

Downsampling is antialiased either way. ``F.interpolate(antialias=True)`` does not honour ``align_corners=True``
(its filter centres are half-pixel), so the corner-aligned path blurs first (Gaussian, sigma = (factor - 1) / 2
per axis, as scikit-image's ``resize(anti_aliasing=True)``) and then samples bilinearly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["resample"]


def _gaussian_blur_axis(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    if dim == 2:  # height
        pad, weight = (0, 0, radius, radius), k.view(1, 1, -1, 1)
    else:
        pad, weight = (radius, radius, 0, 0), k.view(1, 1, 1, -1)
    x = F.pad(x, pad, mode="replicate")
    return F.conv2d(x, weight.expand(c, 1, *weight.shape[-2:]), groups=c)


def resample(x: torch.Tensor, size: tuple[int, int], *, align_corners: bool) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size), bilinear, antialiased when downsampling; ``align_corners`` as the task's
    convention (see the module docstring)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if not align_corners:
        down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)
    for dim, n in ((2, size[0]), (3, size[1])):
        factor = (x.shape[dim] - 1) / max(1, n - 1)
        if factor > 1.0:
            x = _gaussian_blur_axis(x, (factor - 1) / 2, dim)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
