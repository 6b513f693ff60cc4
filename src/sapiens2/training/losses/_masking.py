"""Shared checks and masked reductions used by every loss in this package."""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import LossInputError


def check_same_shape(pred: Tensor, target: Tensor, what: str = "pred and target") -> None:
    if pred.shape != target.shape:
        raise LossInputError(f"{what} must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def check_nchw(x: Tensor, name: str, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise LossInputError(f"{name} must be {want}, got shape {tuple(x.shape)}")


def pixel_mask(valid_mask: Tensor | None, like: Tensor) -> Tensor:
    """A (B, 1, H, W) 0/1 mask in ``like``'s dtype; ``None`` = every pixel valid; accepts (B, H, W) too."""
    b, _, h, w = like.shape
    if valid_mask is None:
        return torch.ones((b, 1, h, w), dtype=like.dtype, device=like.device)
    m = valid_mask
    if m.ndim == 3:
        m = m.unsqueeze(1)
    if m.ndim != 4 or m.shape[0] != b or m.shape[1] != 1 or m.shape[-2:] != (h, w):
        raise LossInputError(f"valid_mask must be (B, 1, H, W) or (B, H, W) matching {(b, h, w)}, "
                         f"got shape {tuple(valid_mask.shape)}")
    # > 0 rather than a cast so that weights like 255 or soft values still mean "valid".
    return (m.detach() > 0).to(like.dtype)


def clean_target(target: Tensor, mask: Tensor) -> Tensor:
    """Zero the target where the mask is 0, so NaN/inf placeholders in invalid pixels cannot leak into the loss."""
    return torch.where(mask.expand_as(target) > 0, target.detach(), torch.zeros((), dtype=target.dtype,
                                                                                  device=target.device))


def zero_loss(pred: Tensor) -> Tensor:
    """A 0 that keeps the graph (so ``backward`` works on an all-invalid batch) and is never NaN."""
    return torch.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0).sum() * 0.0


def masked_pixel_mean(per_element: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``per_element * mask`` over all elements (channels included) divided by the number of valid pixels.

    This is the official reduction of the dense losses: a (B, C, H, W) error with a (B, 1, H, W) mask is summed over
    channels and averaged over valid pixels (so a 3-channel L1 is 3x a per-element mean).
    """
    return (per_element * mask).sum() / mask.sum().clamp(min=1)


def finite(loss: Tensor) -> Tensor:
    return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)


def masked_pair(pred: Tensor, target: Tensor, valid_mask: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """The common start of the dense losses: check (B, C, H, W) shapes, build the pixel mask, and return
    ``(clean target in pred's dtype, mask)``, or None when no pixel has ground truth (the loss is then 0)."""
    check_nchw(pred, "pred")
    check_same_shape(pred, target)
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return None
    return clean_target(target, mask).to(pred.dtype), mask
