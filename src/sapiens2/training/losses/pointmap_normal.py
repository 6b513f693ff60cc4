"""Pointmap: compare the surface normals implied by predicted and target pointmaps."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, check_same_shape, clean_target, pixel_mask, zero_loss


def pointmap_to_normals(pointmap: Tensor, valid_mask: Tensor, scale: Tensor | None = None,
                        amplification: float = 100.0) -> tuple[Tensor, Tensor]:
    """Unit normals (B, 3, H, W) from ``cross(right - centre, down - centre)`` of ``pointmap / scale`` (reflect
    padding at the border, differences amplified by 100 as in the official code), and their (B, 1, H, W) bool
    validity (mask and non-degenerate cross product). Invalid normals are 0.
    """
    if scale is not None:
        pointmap = pointmap / scale.reshape(-1, 1, 1, 1).to(pointmap.dtype)
    padded = F.pad(pointmap, (1, 1, 1, 1), mode="reflect")
    centre = padded[:, :, 1:-1, 1:-1]
    dx = (padded[:, :, 1:-1, 2:] - centre) * amplification
    dy = (padded[:, :, 2:, 1:-1] - centre) * amplification
    normal = torch.cross(dx, dy, dim=1)
    magnitude = normal.norm(dim=1, keepdim=True)
    valid = (magnitude > 1e-6) & (valid_mask > 0)
    normal = normal / magnitude.clamp(min=1e-6) * valid.to(normal.dtype)
    return normal, valid


def pointmap_normal_loss(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None,
                         scale: Tensor | None = None, l1_weight: float = 1.0) -> Tensor:
    """Per pixel ``(1 - cos) + l1_weight * mean_c |n_pred - n_target|`` over pixels with a valid *target* normal,
    averaged over those pixels (official ``PointmapNormalLoss``). pred, target: (B, 3, H, W) canonical pointmaps;
    scale: (B,) or (B, 1) ground-truth canonical scale (metric = canonical / scale); H, W >= 2.
    """
    check_nchw(pred, "pred pointmap", 3)
    check_same_shape(pred, target)
    if min(pred.shape[-2:]) < 2:
        raise LossInputError(f"the pointmap normal loss needs H, W >= 2, got {tuple(pred.shape[-2:])}")
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    if scale is not None:
        scale = scale.detach()
    pred_n, _ = pointmap_to_normals(pred, mask, scale)
    target_n, target_valid = pointmap_to_normals(target, mask, scale)
    valid = target_valid.to(pred.dtype)
    cos = (pred_n * target_n).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    per_pixel = (1.0 - cos) + l1_weight * (pred_n - target_n).abs().mean(dim=1, keepdim=True)
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)
