"""The light patch decoder: from the student's visible tokens back to every patch of the grid.

Visible tokens are projected to the decoder width and scattered to their grid places; masked places get one
learned mask token. A few pre-norm transformer blocks (the backbone's own ``Block``, 2D RoPE at the true
grid positions, so it works at any resolution without a position table) mix context into the masked places.
Two outputs per patch: ``pixels`` (p*p*3, the MAE reconstruction) and ``tokens`` (the decoder width, which
the iBOT projection head maps to prototype logits for the dense loss at masked places).

Why the dense loss reads the decoder: the student never sees masked patches (the MAE trick that makes a
1024x768 step cheap); a second student pass with mask tokens in place would cost a full-length forward and
backward. Predicting the teacher's tokens at masked places from the visible context (as CAE does) keeps one
cheap student pass, at the price of a decoder that serves two targets.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import TrainingConfigError
from ...models.arch import NORM_EPS, NUM_PREFIX_TOKENS, PATCH_SIZE
from ...models.block import Block
from ...models.init import init_transformer_weights
from ...models.rope import RopePositionEmbedding


class PatchDecoder(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int = 512, depth: int = 4, num_heads: int = 16,
                 ffn_ratio: float = 4.0, patch_size: int = PATCH_SIZE):
        super().__init__()
        if decoder_dim % num_heads or (decoder_dim // num_heads) % 4:
            raise TrainingConfigError(f"decoder_dim {decoder_dim} / heads {num_heads} must give a head dim "
                                      "divisible by 4")
        self.patch_size = patch_size
        self.decoder_dim = decoder_dim
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.rope = RopePositionEmbedding(decoder_dim // num_heads, "fp32")
        self.blocks = nn.ModuleList(
            Block(decoder_dim, num_heads, int(decoder_dim * ffn_ratio)) for _ in range(depth))
        self.norm = nn.RMSNorm(decoder_dim, eps=NORM_EPS)
        self.to_pixels = nn.Linear(decoder_dim, patch_size * patch_size * 3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_weights(self, layer_scale=1.0)  # a plain residual branch: the decoder is shallow
        self.rope.reset_parameters()

    def forward(self, encoded: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``encoded`` (B, 9 + K, C) student tokens for the visible patches ``keep`` (B, K) of an (h, w) grid.

        Returns ``tokens`` (B, h*w, D) and ``pixels`` (B, h*w, p*p*3) for every grid place (row-major).
        """
        h, w = grid
        b, k = keep.shape
        x = self.embed(encoded)
        prefix, visible = x[:, :NUM_PREFIX_TOKENS], x[:, NUM_PREFIX_TOKENS:]
        full = self.mask_token.to(x.dtype).expand(b, h * w, -1)
        full = full.scatter(1, keep[:, :, None].expand(-1, -1, x.shape[-1]), visible)
        tokens = torch.cat((prefix, full), dim=1)
        rope = self.rope.sin_cos(h, w, device=x.device)
        for blk in self.blocks:
            tokens = blk(tokens, rope, NUM_PREFIX_TOKENS)
        tokens = self.norm(tokens[:, NUM_PREFIX_TOKENS:])
        return {"tokens": tokens, "pixels": self.to_pixels(tokens)}
