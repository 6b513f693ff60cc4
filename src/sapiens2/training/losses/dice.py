"""Segmentation: soft Dice loss, macro-averaged over the classes present in each sample."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .cross_entropy import check_labels


def dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = 255, include_background: bool = False,
              eps: float = 1e-3) -> Tensor:
    """Official ``DiceLoss`` defaults: softmax, squared denominators, background (class 0) left out.

    Per sample b and class c (only pixels whose label is not ``ignore_index``):
    ``dice = (2*sum(p*g) + eps) / (sum(p**2) + sum(g**2) + eps)``; the sample's Dice is the mean over the classes
    present in its ground truth, its loss ``1 - dice``; samples without any present class contribute 0; the result
    is the mean over the batch (B in the denominator).
    """
    check_labels(logits, labels, ignore_index)
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    valid = (labels != ignore_index).unsqueeze(1)
    safe_labels = torch.where(valid.squeeze(1), labels, torch.zeros_like(labels))
    one_hot = F.one_hot(safe_labels, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    valid = valid.to(probs.dtype)
    pred_m, gt_m = probs * valid, one_hot * valid
    if not include_background and num_classes > 1:
        pred_m, gt_m = pred_m[:, 1:], gt_m[:, 1:]
    inter = (pred_m * gt_m).sum(dim=(2, 3))
    denom = (pred_m * pred_m).sum(dim=(2, 3)) + (gt_m * gt_m).sum(dim=(2, 3))
    dice_per_class = (2 * inter + eps) / (denom + eps)
    present = (gt_m.sum(dim=(2, 3)) > 0).to(probs.dtype)  # (B, C')
    dice = (dice_per_class * present).sum(dim=1) / present.sum(dim=1).clamp(min=1)
    has_present = (present.sum(dim=1) > 0).to(probs.dtype)
    return ((1.0 - dice) * has_present).mean()
