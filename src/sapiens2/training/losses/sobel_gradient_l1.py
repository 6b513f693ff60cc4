"""Matting: L1 between Sobel gradient magnitudes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError
from ._masking import check_nchw, check_same_shape, clean_target, pixel_mask, zero_loss


def sobel_gradient_magnitude(x: Tensor) -> Tensor:
    """Per-channel ``sqrt(gx**2 + gy**2 + 1e-6)`` with 3x3 Sobel kernels and reflect padding (same size out)."""
    b, c, h, w = x.shape
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="reflect")
    g = F.conv2d(padded, kernels).reshape(b, c, 2, h, w)
    return torch.sqrt((g * g).sum(dim=2) + 1e-6)


def sobel_gradient_l1(pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> Tensor:
    """``mean(|mag(pred) - mag(target)| * mask)`` over all elements (official ``MattingGradLoss``); H, W >= 2."""
    check_nchw(pred, "pred")
    check_same_shape(pred, target)
    if min(pred.shape[-2:]) < 2:
        raise LossInputError(f"sobel_gradient_l1 needs H, W >= 2, got {tuple(pred.shape[-2:])}")
    mask = pixel_mask(valid_mask, pred)
    if not bool(mask.any()):
        return zero_loss(pred)
    target = clean_target(target, mask).to(pred.dtype)
    err = (sobel_gradient_magnitude(pred) - sobel_gradient_magnitude(target)).abs()
    return (err * mask).mean()
