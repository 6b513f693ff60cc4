"""In-memory synthetic humans as a ``torch.utils.data.Dataset`` (generated on the fly, nothing on disk)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .render import generate_sample


class SynthHumans(Dataset):
    """``length`` samples of stream ``seed``; item ``i`` is always the same.

    Items are dicts of tensors: ``image`` (3, H, W) uint8 RGB; ``seg`` (H, W) int64; ``instance`` (H, W) int64;
    ``mask`` (H, W) bool; ``depth`` (H, W) float32; ``pointmap``, ``normal``, ``albedo`` (3, H, W) float32;
    ``K`` (3, 3) float32; ``keypoints`` (P, 308, 3) float32 (x, y, visibility); ``boxes`` (P, 4) float32 xywh.
    P varies; use :func:`collate` to batch.
    """

    def __init__(self, length: int, seed: int = 0, height: int = 256, width: int = 192, max_people: int = 4):
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length, self.seed, self.height, self.width, self.max_people = length, seed, height, width, max_people

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        s = generate_sample(self.seed, index % self.length, self.height, self.width, self.max_people)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))  # noqa: E731
        return {"image": chw(s["image"]), "seg": torch.from_numpy(s["seg"].astype(np.int64)),
                "instance": torch.from_numpy(s["instance"].astype(np.int64)),
                "mask": torch.from_numpy(s["mask"].astype(bool)), "depth": torch.from_numpy(s["depth"]),
                "pointmap": chw(s["pointmap"]), "normal": chw(s["normal"]), "albedo": chw(s["albedo"]),
                "K": torch.from_numpy(s["K"]), "keypoints": torch.from_numpy(s["keypoints"]),
                "boxes": torch.from_numpy(s["boxes"])}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack the fixed-size entries; ``keypoints`` and ``boxes`` stay lists (people per image vary)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = vals if key in ("keypoints", "boxes") else torch.stack(vals)
    return out
