"""Pointmap: X and Y must agree with Z through the camera intrinsics."""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, masked_pixel_mean, pixel_mask, zero_loss


def intrinsics_consistency_loss(pred: Tensor, intrinsics: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """Masked mean over pixels of ``|X - (u - cx) Z / fx| + |Y - (v - cy) Z / fy|`` (official
    ``PointmapIntrinsicsConsistencyLoss``); u, v are the 0-based column and row of the pixel.

    pred: (B, 3, H, W) XYZ (any isotropic scale: the check is scale-free); intrinsics: (B, 3, 3) K of the image the
    pointmap is aligned with (the official head passes the original, uncanonicalised K).
    """
    check_nchw(pred, "pred pointmap", 3)
    b, _, h, w = pred.shape
    if intrinsics.shape != (b, 3, 3):
        raise LossInputError(f"intrinsics must be (B, 3, 3) = {(b, 3, 3)}, got {tuple(intrinsics.shape)}")
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    k = intrinsics.detach().to(pred.dtype)
    fx, fy, cx, cy = (k[:, 0, 0, None, None], k[:, 1, 1, None, None], k[:, 0, 2, None, None], k[:, 1, 2, None, None])
    cols = torch.arange(w, device=pred.device, dtype=pred.dtype)[None, None, :]
    rows = torch.arange(h, device=pred.device, dtype=pred.dtype)[None, :, None]
    x, y, z = pred[:, 0], pred[:, 1], pred[:, 2]
    err = (x - (cols - cx) * z / fx).abs() + (y - (rows - cy) * z / fy).abs()
    return masked_pixel_mean(err.unsqueeze(1), mask)
