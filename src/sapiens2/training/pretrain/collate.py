"""Batching for pretraining: stack the views and make the patch masks (masks are data, made here, not in the model).

Each item carries a ``seed``; its masks come from a generator seeded with it, so a sample's masks are the
same whichever process, worker or batch position handles it.
"""
from __future__ import annotations

from typing import Any

import torch

from ...errors import TrainingConfigError
from ...models.arch import PATCH_SIZE
from .masking import MaskSpec, split_indices

MASK_SEED_SALT = 0x6D61736B  # separates the mask stream from the crop stream of the same sample seed


class PretrainCollate:
    """items (dicts with ``globals`` [V x (3, H, W)], ``locals`` [L x (3, h, w)], ``seed``, ``index``) -> batch:

    ``globals`` (V, B, 3, H, W) float32; ``locals`` (L, B, 3, h, w) or absent; ``mask`` (V, B, N) bool (True =
    hidden); ``keep`` (V, B, K) and ``masked`` (V, B, M) sorted int64 patch indices; ``index`` (B,) int64.
    """

    def __init__(self, mask: MaskSpec, patch_size: int = PATCH_SIZE):
        self.mask = mask
        self.patch_size = patch_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise TrainingConfigError("cannot collate an empty batch")
        globals_ = torch.stack([torch.stack(it["globals"]) for it in items], dim=1)
        v, b, _, hh, ww = globals_.shape
        h, w = hh // self.patch_size, ww // self.patch_size
        masks = torch.empty(v, b, h * w, dtype=torch.bool)
        for j, it in enumerate(items):
            gen = torch.Generator().manual_seed((int(it["seed"]) ^ MASK_SEED_SALT) & 0x7FFF_FFFF_FFFF_FFFF)
            for i in range(v):
                masks[i, j] = self.mask.make(h, w, gen)
        keep, masked = split_indices(masks.flatten(0, 1))
        batch = {"globals": globals_, "mask": masks, "keep": keep.view(v, b, -1), "masked": masked.view(v, b, -1),
                 "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}
        if items[0].get("locals"):
            batch["locals"] = torch.stack([torch.stack(it["locals"]) for it in items], dim=1)
        return batch
