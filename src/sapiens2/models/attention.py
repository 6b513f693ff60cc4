"""Multi-head / grouped-query self-attention with QK-norm, RoPE and LayerScale (official key names)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import NORM_EPS
from .norm import RMSNorm
from .rope import apply_rope


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch; the parameter is named ``weight`` as in the checkpoints."""

    def __init__(self, dim: int, init_value: float = 1e-4, device=None, dtype=None):
        super().__init__()
        self.init_value = init_value
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            nn.init.constant_(self.weight, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Attention(nn.Module):
    """Self-attention over (B, N, C) tokens.

    ``num_kv_heads < num_heads`` gives grouped-query attention: key/value head j serves query heads
    j*g .. j*g+g-1 (the official ``repeat_interleave`` grouping), computed by SDPA's ``enable_gqa`` so
    the repeated keys and values are never materialised.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, qk_norm: bool = True,
                 layer_scale: bool = True, device=None, dtype=None):
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"dim {dim}, heads {num_heads}, kv heads {num_kv_heads} do not divide")
        fk = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = self.head_dim * num_kv_heads
        self.wq = nn.Linear(dim, dim, **fk)
        self.wk = nn.Linear(dim, kv_dim, **fk)
        self.wv = nn.Linear(dim, kv_dim, **fk)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=NORM_EPS, **fk)
            self.k_norm = RMSNorm(self.head_dim, eps=NORM_EPS, **fk)
        else:
            self.q_norm = self.k_norm = None
        self.proj = nn.Linear(dim, dim, **fk)
        self.gamma = LayerScale(dim, **fk) if layer_scale else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                num_prefix: int = 0) -> torch.Tensor:
        b, n, c = x.shape
        q = self.wq(x).view(b, n, self.num_heads, self.head_dim)
        k = self.wk(x).view(b, n, self.num_kv_heads, self.head_dim)
        v = self.wv(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:  # per head, on the contiguous (B, N, heads, D) layout
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if rope is not None:
            sin, cos = rope
            q = apply_rope(q, sin, cos, num_prefix)
            k = apply_rope(k, sin, cos, num_prefix)
        gqa = self.num_kv_heads != self.num_heads
        # Under autocast, RoPE may hand back float32 while v is half precision; SDPA needs one dtype.
        q, k = q.to(v.dtype), k.to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return self.gamma(out) if self.gamma is not None else out
