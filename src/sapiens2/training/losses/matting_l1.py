"""Matting: L1 on alpha or pre-multiplied foreground."""
from __future__ import annotations

from torch import Tensor

from ._masking import check_nchw, check_same_shape, clean_target, pixel_mask, zero_loss


def matting_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """``mean(|pred - target| * mask)`` over *all* B*C*H*W elements (official ``MattingL1Loss``: masked pixels count
    as 0 in the mean, unlike the dense losses). pred, target: (B, C, H, W)."""
    check_nchw(pred, "pred")
    check_same_shape(pred, target)
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    return ((pred - target).abs() * mask).mean()
