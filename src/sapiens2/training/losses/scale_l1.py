"""Pointmap: L1 on the scale branch (canonical = scale * metric)."""
from __future__ import annotations

from torch import Tensor

from ...errors import LossInputError
from ._masking import zero_loss


def scale_l1(pred_scale: Tensor, target_scale: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean over samples of ``|pred_scale - target_scale|`` (official ``PointmapScaleL1Loss``).

    pred_scale, target_scale: (B,) or (B, 1); valid: optional (B,) mask of samples whose scale is known.
    """
    p = pred_scale.reshape(pred_scale.shape[0], -1)
    t = target_scale.detach().to(p.dtype).reshape(target_scale.shape[0], -1)
    if p.shape != t.shape or p.shape[1] != 1:
        raise LossInputError(f"pred_scale and target_scale must both be (B,) or (B, 1), got {tuple(pred_scale.shape)} "
                         f"and {tuple(target_scale.shape)}")
    m = p.new_ones(p.shape) if valid is None else (valid.detach().reshape(-1, 1) > 0).to(p.dtype)
    if not bool(m.any()):
        return zero_loss(p)
    err = (p - t.nan_to_num(0.0)).abs()
    return (err * m).sum() / m.sum().clamp(min=1)
