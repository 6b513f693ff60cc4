"""Pointmap depth: scale-invariant log loss (SiLog)."""
from __future__ import annotations

import torch
from torch import Tensor

from ._masking import check_nchw, check_same_shape, pixel_mask


def silog_loss(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, variance_focus: float = 0.5,
               clamp_eps: float = 1e-4) -> Tensor:
    """Per sample ``sqrt(mean(d**2) - variance_focus * mean(d)**2)`` with ``d = log(target) - log(pred)`` over valid
    pixels (both clamped to ``clamp_eps``), then the mean over the batch (official ``SiLogLoss``).

    pred, target: (B, 1, H, W) depths. A sample without valid pixels contributes 0 (it still counts in the batch
    mean, as in the official code). The square root is taken of a value floored at 1e-12 so a perfect prediction
    has a finite gradient.
    """
    check_nchw(pred, "pred depth")
    check_same_shape(pred, target)
    mask = pixel_mask(valid_mask, pred).flatten(1) > 0
    p, t = pred.flatten(1), target.detach().to(pred.dtype).flatten(1)
    d = torch.log(t.clamp(min=clamp_eps)) - torch.log(p.clamp(min=clamp_eps))
    mask = mask & torch.isfinite(d)
    d = torch.where(mask, d, torch.zeros((), dtype=d.dtype, device=d.device))
    m = mask.to(pred.dtype)
    count = m.sum(dim=1)
    mean_sq = (d * d * m).sum(dim=1) / count.clamp(min=clamp_eps)
    mean = (d * m).sum(dim=1) / count.clamp(min=clamp_eps)
    var = mean_sq - variance_focus * mean * mean
    per_sample = torch.where(count > 0, torch.sqrt(var.clamp(min=1e-12)), torch.zeros_like(var))
    return per_sample.mean()
