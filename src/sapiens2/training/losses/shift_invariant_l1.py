"""Pointmap: L1 after removing each sample's centroid (invariant to a global translation)."""
from __future__ import annotations

from torch import Tensor

from ._masking import masked_pair, masked_pixel_mean, zero_loss


def shift_invariant_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """Centre pred and target on their own masked centroids (per sample, per channel), then the masked L1
    (channels summed, pixels averaged) as the official ``PointmapShiftInvariantL1Loss``.
    """
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared
    count = mask.sum(dim=(2, 3), keepdim=True) + 1e-6
    pred_c = pred - (pred * mask).sum(dim=(2, 3), keepdim=True) / count
    target_c = target - (target * mask).sum(dim=(2, 3), keepdim=True) / count
    return masked_pixel_mean((pred_c - target_c).abs(), mask)
