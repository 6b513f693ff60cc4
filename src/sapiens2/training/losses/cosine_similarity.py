"""Normals: 1 - cosine similarity between predicted and target normals."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._masking import masked_pair, masked_pixel_mean, zero_loss


def normal_cosine_loss(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Masked mean over pixels of ``1 - <pred/|pred|, target/|target|>`` (official ``NormalCosineSimilarityLoss``).

    pred, target: (B, 3, H, W) (any length; both are normalised with ``eps``).
    """
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared
    cos = (F.normalize(pred, dim=1, eps=eps) * F.normalize(target, dim=1, eps=eps)).sum(dim=1, keepdim=True)
    return masked_pixel_mean(1.0 - cos, mask)
