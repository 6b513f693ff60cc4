"""Pointmap: masked L1 after upsampling prediction and target (official ``MultiscaleL1Loss``)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import masked_pair, masked_pixel_mean, zero_loss


def multiscale_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, scale_factor: float = 2.0,
                  mode: str = "bilinear") -> Tensor:
    """Resize pred and target by ``scale_factor`` (bilinear/bicubic, align_corners=False), the mask by nearest, then
    the masked L1 of :func:`~sapiens2.training.losses.l1.masked_l1`. Invalid target pixels are 0 before resizing,
    as the official ground truth is.
    """
    if mode not in ("bilinear", "bicubic"):
        raise LossInputError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared
    pred_s = F.interpolate(pred, scale_factor=scale_factor, mode=mode, align_corners=False)
    target_s = F.interpolate(target, scale_factor=scale_factor, mode=mode, align_corners=False)
    mask_s = F.interpolate(mask, scale_factor=scale_factor, mode="nearest")
    return masked_pixel_mean((pred_s - target_s).abs(), mask_s)
