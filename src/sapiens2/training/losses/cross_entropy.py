"""Segmentation: class-weighted pixel cross-entropy with an ignore label."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw


def check_labels(logits: Tensor, labels: Tensor, ignore_index: int) -> None:
    check_nchw(logits, "logits")
    if labels.ndim != 3 or labels.shape[0] != logits.shape[0] or labels.shape[-2:] != logits.shape[-2:]:
        raise LossInputError(f"labels must be (B, H, W) = {(logits.shape[0], *logits.shape[-2:])}, "
                         f"got shape {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise LossInputError(f"labels must be torch.long class ids, got {labels.dtype}")
    bad = ((labels < 0) | (labels >= logits.shape[1])) & (labels != ignore_index)
    if bool(bad.any()):
        raise LossInputError(f"labels hold class ids outside [0, {logits.shape[1] - 1}] that are not the ignore index "
                         f"{ignore_index}: {sorted(set(labels[bad].unique().tolist()))[:10]}")


def seg_cross_entropy(logits: Tensor, labels: Tensor, class_weight: Sequence[float] | Tensor | None = None,
                      ignore_index: int = 255) -> Tensor:
    """``sum(class_weight[y] * CE) / (B*H*W)``: the official reduction (per-pixel losses averaged over *all* pixels,
    ignored pixels counting as 0; it is not renormalised by the weights).

    logits: (B, C, H, W); labels: (B, H, W) long, ``ignore_index`` marks pixels without ground truth.
    """
    check_labels(logits, labels, ignore_index)
    weight = None
    if class_weight is not None:
        weight = torch.as_tensor(class_weight, dtype=logits.dtype, device=logits.device)
        if weight.shape != (logits.shape[1],):
            raise LossInputError(f"class_weight has {weight.numel()} entries but the logits have {logits.shape[1]} "
                             "classes")
    per_pixel = F.cross_entropy(logits, labels, weight=weight, reduction="none", ignore_index=ignore_index)
    return per_pixel.sum() / labels.numel()
