"""Matting: L1 on alpha or pre-multiplied foreground."""
from __future__ import annotations

from torch import Tensor

from ._masking import masked_pair, zero_loss


def matting_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """``mean(|pred - target| * mask)`` over *all* B*C*H*W elements (official ``MattingL1Loss``: masked pixels count
    as 0 in the mean, unlike the dense losses). pred, target: (B, C, H, W)."""
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared
    return ((pred - target).abs() * mask).mean()
