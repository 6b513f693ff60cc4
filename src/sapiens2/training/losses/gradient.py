"""Normals and albedo: match the forward-difference image gradients of prediction and target."""
from __future__ import annotations

from torch import Tensor

from ...errors import LossInputError
from ._masking import masked_pair, zero_loss


def gradient_loss(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, penalty: str = "squared",
                  average_axes: bool = False) -> Tensor:
    """Error between horizontal/vertical forward differences, where both pixels of a pair are valid.

    Per axis: ``sum(err(dpred - dtarget) * pair_mask) / count(valid pairs)`` (channels summed); the result is
    ``loss_x + loss_y`` or, with ``average_axes``, their mean. ``penalty="squared"`` is what the official
    ``NormalGradL1Loss`` (average_axes=False) and ``AlbedoGradL1Loss`` (average_axes=True) compute despite their
    names; ``"absolute"`` gives a true L1.
    """
    if penalty not in ("squared", "absolute"):
        raise LossInputError(f"penalty must be 'squared' or 'absolute', got {penalty!r}")
    prepared = masked_pair(pred, target, valid_mask)
    if prepared is None:
        return zero_loss(pred)
    target, mask = prepared

    def axis_loss(dim: int) -> Tensor:
        n = pred.shape[dim]
        d_err = pred.diff(dim=dim) - target.diff(dim=dim)
        pair = mask.narrow(dim, 0, n - 1) * mask.narrow(dim, 1, n - 1)
        err = d_err * d_err if penalty == "squared" else d_err.abs()
        return (err * pair).sum() / pair.sum().clamp(min=1)

    total = axis_loss(3) + axis_loss(2)
    return total * 0.5 if average_axes else total
