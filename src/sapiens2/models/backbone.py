"""The Sapiens2 vision transformer backbone, module and key layout identical to the official one."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import InputSizeError
from .arch import NORM_EPS, NUM_PREFIX_TOKENS, NUM_STORAGE_TOKENS, PATCH_SIZE, TOKENIZER_WINDOW, BackboneArch, get_arch
from .block import Block
from .norm import RMSNorm
from .init import init_transformer_weights
from .rope import RopePositionEmbedding
from .tokenizer import WindowTokenizer


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int = PATCH_SIZE, device=None, dtype=None):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, patch_size, stride=patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class Sapiens2Backbone(nn.Module):
    """ViT with patch 16, class + 8 storage tokens, RoPE, QK-norm, GQA middle blocks, SwiGLU, LayerScale.

    ``forward_tokens(x)`` returns the final-normed token sequence (B, 1 + 8 + h*w, C) exactly as the
    official model; calling the module returns the patch feature map (B, C, h, w) for dense heads.
    ``img_size`` is the training size (heads that are tied to it read it); any input whose sides are
    multiples of ``input_multiple`` runs.
    """

    def __init__(self, arch: str | BackboneArch, img_size: tuple[int, int] = (1024, 768),
                 use_tokenizer: bool = False, rope_dtype: str | torch.dtype = "bf16", device=None, dtype=None):
        super().__init__()
        self.arch = get_arch(arch)
        a = self.arch
        fk = {"device": device, "dtype": dtype}
        self.img_size = tuple(int(s) for s in img_size)
        self.use_tokenizer = bool(use_tokenizer)
        self.embed_dim = a.embed_dim
        self.patch_size = PATCH_SIZE
        self.num_prefix_tokens = NUM_PREFIX_TOKENS
        self.grad_checkpointing = False

        self.cls_token = nn.Parameter(torch.empty(1, 1, a.embed_dim, **fk))
        self.storage_tokens = nn.Parameter(torch.empty(1, NUM_STORAGE_TOKENS, a.embed_dim, **fk))
        self.patch_embed = PatchEmbed(a.embed_dim, **fk)
        self.rope_embed = RopePositionEmbedding(a.head_dim, rope_dtype, device=device)
        self.tokenizer = (
            WindowTokenizer(a.embed_dim, a.tokenizer_depth, a.num_heads, a.ffn_dim, **fk) if use_tokenizer else None
        )
        self.blocks = nn.Sequential(*(
            Block(a.embed_dim, a.num_heads, a.ffn_dim, num_kv_heads=kv, **fk) for kv in a.kv_heads_per_block
        ))
        self.ln1 = RMSNorm(a.embed_dim, eps=NORM_EPS, **fk)
        self.init_weights()

    # -- construction -------------------------------------------------------------------------------
    @property
    def input_multiple(self) -> int:
        return self.patch_size * (TOKENIZER_WINDOW if self.use_tokenizer else 1)

    @property
    def rope_dtype(self) -> torch.dtype:
        return self.rope_embed.dtype

    def init_weights(self) -> None:
        """Random initialisation for training from scratch (a no-op for tensors on the meta device)."""
        init_transformer_weights(self, layer_scale=1e-4)
        self.rope_embed.reset_parameters()

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) token grid the main blocks see for an input of this size."""
        m = self.input_multiple
        if height % m or width % m or height <= 0 or width <= 0:
            raise InputSizeError(
                f"input size {height}x{width} (HxW) is not a multiple of {m}"
                + (" (patch 16 x tokenizer window 4)" if self.use_tokenizer else " (the patch size)")
                + f"; resize or pad it, e.g. to {max(m, -(-height // m) * m)}x{max(m, -(-width // m) * m)}"
            )
        s = m
        return height // s, width // s

    # -- forward ------------------------------------------------------------------------------------
    def forward_tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The final-normed tokens (B, 1 + 8 + h*w, C) for a normalised image batch (B, 3, H, W).

        ``keep`` (B, K) int64, optional: indices into the row-major patch grid (after the 4K tokenizer, if any)
        of the only patch tokens to process, MAE-style; the output is then (B, 1 + 8 + K, C). Each kept token
        is rotated for its true grid position, so a masked pass costs ~K/(h*w) of a full one.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputSizeError(f"expected an image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        h, w = self.grid_size(x.shape[-2], x.shape[-1])
        grid = self.patch_embed(x)
        if self.tokenizer is not None:
            grid = self.tokenizer(grid)
        b = grid.shape[0]
        tokens = grid.flatten(2).transpose(1, 2)
        sin, cos = self.rope_embed.sin_cos(h, w, device=x.device)
        if keep is not None:
            if keep.ndim != 2 or keep.shape[0] != b:
                raise ValueError(f"keep must be (B={b}, K) patch indices, got shape {tuple(keep.shape)}")
            keep = keep.to(device=tokens.device, dtype=torch.long)
            tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[-1]))
            sin, cos = sin[keep][:, None], cos[keep][:, None]  # (B, 1, K, D): per sample, broadcast over heads
        prefix = torch.cat((self.cls_token, self.storage_tokens), dim=1).expand(b, -1, -1).to(tokens.dtype)
        tokens = torch.cat((prefix, tokens), dim=1)
        rope = (sin, cos)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, rope, self.num_prefix_tokens, use_reentrant=False)
            else:
                tokens = blk(tokens, rope, self.num_prefix_tokens)
        return self.ln1(tokens)

    def tokens_to_feature_map(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Drop the prefix tokens and lay the patch tokens out as (B, C, h, w)."""
        h, w = self.grid_size(height, width)
        patches = tokens[:, self.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens_to_feature_map(self.forward_tokens(x), x.shape[-2], x.shape[-1])

    def extra_repr(self) -> str:
        return f"arch={self.arch.name}, img_size={self.img_size}, use_tokenizer={self.use_tokenizer}"


def build_backbone(arch: str | BackboneArch, img_size: tuple[int, int] = (1024, 768), use_tokenizer: bool = False,
                   rope_dtype: str | torch.dtype = "bf16", device=None, dtype=None) -> Sapiens2Backbone:
    """Build a randomly initialised backbone; ``device="meta"`` builds it without allocating memory."""
    return Sapiens2Backbone(arch, img_size=img_size, use_tokenizer=use_tokenizer, rope_dtype=rope_dtype,
                            device=device, dtype=dtype)
