"""The pre-norm transformer block: RMSNorm -> attention (LayerScale) and RMSNorm -> SwiGLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import NORM_EPS
from .norm import RMSNorm
from .attention import Attention


class SwiGLUFFN(nn.Module):
    """``w3(silu(a) * b)`` with ``[a, b]`` the halves of one fused ``w12`` projection."""

    # Inference runs the FFN over tokens in equal chunks whose hidden activations stay under this many bytes.
    # Besides bounding memory, it keeps every buffer below glibc's 32 MiB mmap ceiling, so buffers are
    # reused instead of page-faulted afresh each block (measured: 0.1b at 1024x768 on CPU, ~35% faster).
    chunk_bytes = 30 * 2**20

    def __init__(self, dim: int, hidden_dim: int, device=None, dtype=None):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden_dim, dim, device=device, dtype=dtype)

    def _halves(self, x: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        # Two half-width products instead of chunking one output: each half comes out contiguous, which
        # makes the elementwise SiLU and product much faster on CPU. Same weights, same numbers.
        # ``out``: 2-D buffers to write the halves into (inference), else new tensors.
        hidden = self.w12.out_features // 2
        w, bias = self.w12.weight, self.w12.bias
        out_a, out_b = out if out is not None else (None, None)
        a = _linear(x, w[:hidden], None if bias is None else bias[:hidden], out_a)
        b = _linear(x, w[hidden:], None if bias is None else bias[hidden:], out_b)
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in (x, self.w12.weight, self.w3.weight)):
            a, b = self._halves(x)
            return self.w3(F.silu(a) * b)
        flat = x.reshape(-1, x.shape[-1])
        hidden = self.w3.in_features
        # equal chunks: a short trailing chunk would be an inefficient matrix product
        chunks = -(-flat.shape[0] * hidden * x.element_size() // self.chunk_bytes)
        rows = max(64, -(-flat.shape[0] // max(chunks, 1)))
        if torch.is_autocast_enabled(x.device.type):  # autocast does not apply to out= products
            return self._chunked(flat, rows).view(*x.shape[:-1], -1)
        # The products write into two buffers shared by every chunk, and the output rows in place.
        a_buf = flat.new_empty(min(rows, flat.shape[0]), hidden)
        b_buf = torch.empty_like(a_buf)
        out = flat.new_empty(flat.shape[0], self.w3.out_features)
        for start in range(0, flat.shape[0], rows):
            xc = flat[start:start + rows]
            a, b = self._halves(xc, (a_buf[:xc.shape[0]], b_buf[:xc.shape[0]]))
            _linear(F.silu(a, inplace=True).mul_(b), self.w3.weight, self.w3.bias, out[start:start + rows])
        return out.view(*x.shape[:-1], -1)

    def _chunked(self, flat: torch.Tensor, rows: int) -> torch.Tensor:
        out = None
        for start in range(0, flat.shape[0], rows):
            a, b = self._halves(flat[start:start + rows])
            y = self.w3(F.silu(a, inplace=True).mul_(b))  # no temporaries at inference
            if out is None:
                if rows >= flat.shape[0]:
                    return y
                out = y.new_empty(flat.shape[0], y.shape[-1])
            out[start:start + rows] = y
        return out


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; with ``out`` (2-D ``x``), written into it by the same addmm F.linear calls."""
    if out is None:
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_kv_heads: int | None = None,
                 qk_norm: bool = True, layer_scale: bool = True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.ln1 = RMSNorm(dim, eps=NORM_EPS, **fk)
        self.attn = Attention(dim, num_heads, num_kv_heads, qk_norm=qk_norm, layer_scale=layer_scale, **fk)
        self.ln2 = RMSNorm(dim, eps=NORM_EPS, **fk)
        self.ffn = SwiGLUFFN(dim, ffn_dim, **fk)

    def forward(self, x: torch.Tensor, rope=None, num_prefix: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, num_prefix)
        return x + self.ffn(self.ln2(x))
