"""2D rotary position embedding of the patch tokens, reproducing the official numerics.

The official default computes coordinates, angles and sin/cos in bfloat16 and rotates q and k in
bfloat16 (every op rounding), which is what the published checkpoints were trained with; each alternative
reading misses the official outputs by 3e-4 to 2e-3 (docs/official-facts.md §3). ``"fp32"`` runs
the same steps in float32.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UsageError
from ..runtime import parse_precision
from .arch import ROPE_BASE

def rope_torch_dtype(rope_dtype: str | torch.dtype) -> torch.dtype:
    """bfloat16 (official) or float32, from a dtype or any of the runtime's precision names."""
    try:
        return parse_precision(rope_dtype, allowed=("bfloat16", "float32"))
    except UsageError:
        raise ValueError(f"rope_dtype must be 'bf16' or 'fp32', got {rope_dtype!r}") from None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RopePositionEmbedding(nn.Module):
    """Holds the ``periods`` buffer (official key ``rope_embed.periods``) and makes sin/cos for a grid."""

    def __init__(self, head_dim: int, rope_dtype: str | torch.dtype = "bf16", base: float = ROPE_BASE,
                 device=None):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.dtype = rope_torch_dtype(rope_dtype)
        self.register_buffer("periods", torch.empty(head_dim // 4, device=device, dtype=self.dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Computed in the RoPE dtype, as the official code does; a checkpoint's stored buffer overrides it.
        if self.periods.is_meta:
            return
        d = self.head_dim
        with torch.no_grad():
            exps = 2 * torch.arange(d // 4, device=self.periods.device, dtype=self.dtype) / (d // 2)
            self.periods.copy_(self.base ** exps)

    def sin_cos(self, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin, cos), each (h*w, head_dim) in the RoPE dtype, patches row-major over the grid."""
        dt = self.dtype
        device = device if device is not None else self.periods.device
        cy = torch.arange(0.5, h, device=device, dtype=dt) / h
        cx = torch.arange(0.5, w, device=device, dtype=dt) / w
        coords = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).flatten(0, 1)  # (hw, 2) as (y, x)
        coords = 2.0 * coords - 1.0
        periods = self.periods.to(device=device, dtype=dt)
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # (hw, 2, D/4), left to right
        angles = angles.flatten(1, 2).tile(2)  # (hw, D)
        return torch.sin(angles), torch.cos(angles)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, dtype={self.dtype}"


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Rotate the patch rows of x (B, heads, N, D); the first ``num_prefix`` rows are left unrotated.

    The whole tensor goes through the RoPE dtype, prefix rows included, because the official code casts
    all of q and k before rotating (casting only the patch rows misses by 1.4e-3).
    """
    out_dtype = x.dtype
    x = x.to(sin.dtype)
    prefix, patches = x[:, :, :num_prefix], x[:, :, num_prefix:]
    patches = patches * cos + rotate_half(patches) * sin
    return torch.cat((prefix, patches), dim=2).to(out_dtype)
