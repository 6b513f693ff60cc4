"""Albedo: brightness-invariant colour loss on chromaticity (RGB / (R + G + B))."""
from __future__ import annotations

from torch import Tensor

from ._masking import check_nchw, check_same_shape, clean_target, finite, masked_pixel_mean, pixel_mask, zero_loss


def chromaticity_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Masked L1 (channels summed, pixels averaged) between ``x / (sum_c x + eps)`` of the prediction clamped to
    [0, 1] and of the target (official ``AlbedoChromaticityL1Loss``). pred, target: (B, 3, H, W) RGB in [0, 1].
    """
    check_nchw(pred, "pred albedo")
    check_same_shape(pred, target)
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    p = pred.clamp(0, 1)
    pc = p / (p.sum(dim=1, keepdim=True) + eps)
    tc = target / (target.sum(dim=1, keepdim=True) + eps)
    return finite(masked_pixel_mean((pc - tc).abs(), mask))
