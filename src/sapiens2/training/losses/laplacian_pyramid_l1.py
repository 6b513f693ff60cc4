"""Matting: L1 between Laplacian pyramids, coarser levels weighted more."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, check_same_shape, clean_target, pixel_mask, zero_loss


def _binomial_kernel(dtype: torch.dtype, device: torch.device) -> Tensor:
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype, device=device)
    return (torch.outer(row, row) / 256.0)[None, None]


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    b, c, h, w = x.shape
    out = F.conv2d(F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect"), kernel)
    return out.reshape(b, c, h, w)


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Band-pass levels (finest first) then the residual low-pass; each level is cropped to even size, blurred with
    the 5x5 binomial kernel, decimated by 2, and re-expanded (zero insertion x4, blur) for the difference."""
    kernel = _binomial_kernel(x.dtype, x.device)
    pyramid = []
    current = x
    for _ in range(levels - 1):
        h, w = current.shape[-2:]
        current = current[..., : h - h % 2, : w - w % 2]
        down = _blur(current, kernel)[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down * 4
        pyramid.append(current - _blur(up, kernel))
        current = down
    pyramid.append(current)
    return pyramid


def laplacian_pyramid_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None, levels: int = 5) -> Tensor:
    """``sum_l 2**l * mean(|P_l(pred) * m_l - P_l(target) * m_l|) / levels`` with the mask resized (nearest) to each
    level (official ``MattingLaplacianLoss``). Needs H, W >= 2**levels (so every blurred level is >= 4 pixels).
    """
    check_nchw(pred, "pred")
    check_same_shape(pred, target)
    if levels < 1:
        raise LossInputError(f"levels must be >= 1, got {levels}")
    if min(pred.shape[-2:]) < 2 ** levels:
        raise LossInputError(f"laplacian_pyramid_l1 with {levels} levels needs H, W >= {2 ** levels}, "
                         f"got {tuple(pred.shape[-2:])}")
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    total = pred.new_zeros(())
    for level, (p, t) in enumerate(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels))):
        m = F.interpolate(mask, size=p.shape[-2:], mode="nearest")
        total = total + (2 ** level) * (p * m - t * m).abs().mean()
    return total / levels
