"""The pre-norm transformer block: RMSNorm -> attention (LayerScale) and RMSNorm -> SwiGLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import NORM_EPS
from .attention import Attention


class SwiGLUFFN(nn.Module):
    """``w3(silu(a) * b)`` with ``[a, b]`` the halves of one fused ``w12`` projection."""

    def __init__(self, dim: int, hidden_dim: int, device=None, dtype=None):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden_dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_kv_heads: int | None = None,
                 qk_norm: bool = True, layer_scale: bool = True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.ln1 = nn.RMSNorm(dim, eps=NORM_EPS, **fk)
        self.attn = Attention(dim, num_heads, num_kv_heads, qk_norm=qk_norm, layer_scale=layer_scale, **fk)
        self.ln2 = nn.RMSNorm(dim, eps=NORM_EPS, **fk)
        self.ffn = SwiGLUFFN(dim, ffn_dim, **fk)

    def forward(self, x: torch.Tensor, rope=None, num_prefix: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, num_prefix)
        return x + self.ffn(self.ln2(x))
