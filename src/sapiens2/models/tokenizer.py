"""The 4K variant's window tokenizer: each 4x4 window of patch tokens becomes one token."""
from __future__ import annotations

import torch
from torch import nn

from .arch import TOKENIZER_WINDOW
from .block import Block


class WindowTokenizer(nn.Module):
    """A learned window class token plus local position embeddings, through plain transformer blocks
    (no QK-norm, no RoPE, no LayerScale); the class token's output is the window's token.

    Windows are independent, so they run in chunks of ``chunk_size`` to bound activation memory at 4K.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, ffn_dim: int, window: int = TOKENIZER_WINDOW,
                 chunk_size: int = 1024, device=None, dtype=None):
        super().__init__()
        self.window = window
        self.chunk_size = chunk_size
        self.w_cls = nn.Parameter(torch.empty(1, 1, dim, device=device, dtype=dtype))
        self.local_pos_embed = nn.Parameter(torch.empty(1, 1 + window * window, dim, device=device, dtype=dtype))
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ffn_dim, qk_norm=False, layer_scale=False, device=device, dtype=dtype)
            for _ in range(depth)
        )

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) patch grid -> (B, C, H/window, W/window) window tokens."""
        b, c, h, w = grid.shape
        s = self.window
        hh, ww = h // s, w // s
        windows = grid.view(b, c, hh, s, ww, s).permute(0, 2, 4, 3, 5, 1).reshape(b * hh * ww, s * s, c)
        out = []
        for chunk in windows.split(self.chunk_size):
            x = torch.cat((self.w_cls.expand(chunk.shape[0], -1, -1).to(chunk.dtype), chunk), dim=1)
            x = x + self.local_pos_embed
            for blk in self.blocks:
                x = blk(x)
            out.append(x[:, 0])
        return torch.cat(out).view(b, hh, ww, c).permute(0, 3, 1, 2)
