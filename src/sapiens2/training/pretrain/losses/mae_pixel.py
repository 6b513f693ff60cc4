"""MAE reconstruction loss: mean squared error on the masked patches against per-patch normalised pixels."""
from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h*w, p*p*3), patches row-major, each patch flattened as (py, px, channel)."""
    b, c, hh, ww = images.shape
    h, w = hh // patch_size, ww // patch_size
    x = images.reshape(b, c, h, patch_size, w, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, patch_size * patch_size * c)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, h*w, p*p*3) -> (B, 3, h*p, w*p)."""
    b = patches.shape[0]
    h, w = grid
    x = patches.reshape(b, h, w, patch_size, patch_size, 3)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, 3, h * patch_size, w * patch_size)


def mae_pixel_loss(pred: torch.Tensor, images: torch.Tensor, masked: torch.Tensor, patch_size: int,
                   norm_pix: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """``pred`` (B, N, p*p*3) decoder pixels for every patch; ``masked`` (B, M) indices of the hidden patches.

    With ``norm_pix`` (MAE's default) each target patch is standardised by its own mean and variance, which
    makes the loss about structure rather than absolute brightness; the mean is over masked patches only.
    """
    target = patchify(images, patch_size)
    idx = masked[:, :, None].expand(-1, -1, target.shape[-1])
    target = target.gather(1, idx).float()
    pred = pred.gather(1, idx).float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    return ((pred - target) ** 2).mean()
