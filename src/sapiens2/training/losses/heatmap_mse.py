"""Pose: keypoint-weighted mean squared error between predicted and target heatmaps."""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, check_same_shape


def keypoint_heatmap_mse(pred: Tensor, target: Tensor, keypoint_weights: Tensor | None = None,
                         valid_mask: Tensor | None = None) -> Tensor:
    """Mean over B*K*H*W of ``w[b, k] * (pred - target)**2`` (official ``KeypointMSELoss``, before its x10 weight).

    pred, target: (B, K, H, W) heatmaps. keypoint_weights: (B, K) target weights (0 for unlabelled or invisible
    keypoints, optionally multiplied by per-keypoint joint weights). valid_mask: optional spatial mask broadcastable
    to (B, K, H, W). The mean is over all elements, masked ones included as 0, as in the official loss, so an
    all-zero weight batch gives exactly 0 with a gradient.
    """
    check_nchw(pred, "pred heatmaps")
    check_same_shape(pred, target, "pred and target heatmaps")
    weight = torch.ones((), dtype=pred.dtype, device=pred.device)
    if keypoint_weights is not None:
        if keypoint_weights.shape != pred.shape[:2]:
            raise LossInputError(f"keypoint_weights must be (B, K) = {tuple(pred.shape[:2])}, "
                             f"got {tuple(keypoint_weights.shape)}")
        weight = keypoint_weights.detach().to(pred.dtype)[:, :, None, None]
    if valid_mask is not None:
        weight = weight * valid_mask.detach().to(pred.dtype)
    target = target.detach().to(pred.dtype)
    # Zero the error where the weight is 0 before squaring, so garbage targets there cannot produce NaN.
    diff = torch.where(weight > 0, pred - target, torch.zeros((), dtype=pred.dtype, device=pred.device))
    return (diff * diff * weight).mean()
