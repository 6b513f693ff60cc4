"""Albedo: L1 between heavily low-passed prediction and target (leaves edges to the other terms)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, check_same_shape, clean_target, finite, masked_pixel_mean, pixel_mask, zero_loss


def masked_low_pass(x: Tensor, mask: Tensor, down_sample: int) -> Tensor:
    """Area-downsample ``x * mask`` and ``mask`` by ``down_sample``, upsample both bilinearly, divide (a normalised,
    mask-aware blur)."""
    if down_sample == 1:
        return x
    size = x.shape[-2:]
    x_low = F.interpolate(x * mask, scale_factor=1.0 / down_sample, mode="area")
    m_low = F.interpolate(mask, scale_factor=1.0 / down_sample, mode="area")
    x_up = F.interpolate(x_low, size=size, mode="bilinear", align_corners=False)
    m_up = F.interpolate(m_low, size=size, mode="bilinear", align_corners=False)
    return x_up / (m_up + 1e-6)


def low_frequency_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, down_sample: int = 32) -> Tensor:
    """Masked L1 (channels summed, pixels averaged) of :func:`masked_low_pass` of pred and target (official
    ``AlbedoLowFreqL1Loss``; the official albedo config has it commented out). H and W must be >= ``down_sample``.
    """
    check_nchw(pred, "pred albedo")
    check_same_shape(pred, target)
    if down_sample < 1:
        raise LossInputError(f"down_sample must be >= 1, got {down_sample}")
    if min(pred.shape[-2:]) < down_sample:
        raise LossInputError(f"low_frequency_l1 with down_sample={down_sample} needs H, W >= {down_sample}, "
                         f"got {tuple(pred.shape[-2:])}")
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    diff = masked_low_pass(pred, mask, down_sample) - masked_low_pass(target, mask, down_sample)
    return finite(masked_pixel_mean(diff.abs(), mask))
