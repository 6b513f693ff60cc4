"""Dense regression: masked L1 (normals, pointmap, albedo)."""
from __future__ import annotations

from torch import Tensor

from ._masking import masked_pair, masked_pixel_mean, zero_loss


def masked_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """``sum(|pred - target| * mask) / count(valid pixels)`` (official ``L1Loss``: channels summed, pixels averaged).

    pred, target: (B, C, H, W); valid_mask: (B, 1, H, W) or (B, H, W), > 0 = has ground truth.
    """
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared
    return masked_pixel_mean((pred - target).abs(), mask)
