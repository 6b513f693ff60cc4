"""Dense regression: masked L1 (normals, pointmap, albedo)."""
from __future__ import annotations

from torch import Tensor

from ._masking import check_nchw, check_same_shape, clean_target, masked_pixel_mean, pixel_mask, zero_loss


def masked_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """``sum(|pred - target| * mask) / count(valid pixels)`` (official ``L1Loss``: channels summed, pixels averaged).

    pred, target: (B, C, H, W); valid_mask: (B, 1, H, W) or (B, H, W), > 0 = has ground truth.
    """
    check_nchw(pred, "pred")
    check_same_shape(pred, target)
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    return masked_pixel_mean((pred - target).abs(), mask)
