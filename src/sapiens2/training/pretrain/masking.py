"""Patch masks for the masked student, made as DATA by the loader/collate (DINOv2-style), never in the model.

Every sample of a batch hides exactly ``round(ratio * N)`` of its N patches, so the visible tokens form a
dense (B, K) index tensor the backbone can gather (``Sapiens2Backbone.forward_tokens(x, keep=...)``).
Two layouts: ``"random"`` (MAE: a uniform random subset) and ``"block"`` (BEiT/iBOT: random rectangles,
then topped up or trimmed at random to the exact count). A mask depends only on its generator, so the same
sample seed gives the same mask in any process, which is what makes multi-process runs and resume exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import TrainingConfigError

MASK_MODES = ("random", "block")


def num_masked(num_patches: int, ratio: float) -> int:
    """How many of ``num_patches`` a mask of this ratio hides (at least one stays visible)."""
    if not 0.0 <= ratio < 1.0:
        raise TrainingConfigError(f"mask ratio must be in [0, 1), got {ratio}")
    return min(int(round(ratio * num_patches)), num_patches - 1)


def random_mask(h: int, w: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(h*w,) bool, True = hidden; a uniformly random subset of exactly ``num_masked`` patches."""
    n = h * w
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:num_masked(n, ratio)]] = True
    return mask


def block_mask(h: int, w: int, ratio: float, generator: torch.Generator | None = None,
               min_block: int = 4, aspect: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """(h*w,) bool with exactly ``num_masked`` patches hidden, mostly in random rectangles (BEiT-style)."""
    n, target = h * w, num_masked(h * w, ratio)
    grid = torch.zeros(h, w, dtype=torch.bool)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(10 * n):  # bounded: rectangles overlap, so cap the attempts
        remaining = target - int(grid.sum())
        if remaining <= 0:
            break
        area = min_block + float(torch.rand((), generator=generator)) * max(remaining - min_block, 0)
        ar = math.exp(log_lo + float(torch.rand((), generator=generator)) * (log_hi - log_lo))
        bh = max(1, min(h, int(round(math.sqrt(area * ar)))))
        bw = max(1, min(w, int(round(math.sqrt(area / ar)))))
        top = int(torch.randint(0, h - bh + 1, (), generator=generator))
        left = int(torch.randint(0, w - bw + 1, (), generator=generator))
        grid[top:top + bh, left:left + bw] = True
    flat = grid.flatten()
    count = int(flat.sum())
    if count > target:  # trim at random inside the rectangles
        on = flat.nonzero().squeeze(1)
        flat[on[torch.randperm(on.numel(), generator=generator)[:count - target]]] = False
    elif count < target:  # top up at random outside them
        off = (~flat).nonzero().squeeze(1)
        flat[off[torch.randperm(off.numel(), generator=generator)[:target - count]]] = True
    return flat


@dataclass
class MaskSpec:
    """What the collate makes: ``ratio`` of each view's patches hidden, laid out by ``mode``."""

    ratio: float = 0.75
    mode: str = "random"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.mode not in MASK_MODES:
            raise TrainingConfigError(f"mask mode must be one of {MASK_MODES}, got {self.mode!r}")
        num_masked(1000, self.ratio)  # validates the ratio

    def make(self, h: int, w: int, generator: torch.Generator | None = None) -> torch.Tensor:
        fn = random_mask if self.mode == "random" else block_mask
        return fn(h, w, self.ratio, generator)


def split_indices(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool masks with the same count per row -> (keep (B, K), masked (B, M)) sorted int64 indices."""
    counts = masks.sum(1)
    if masks.ndim != 2 or (counts != counts[0]).any():
        raise TrainingConfigError("every mask of a batch must hide the same number of patches")
    order = torch.argsort(masks.to(torch.int8), dim=1, stable=True)  # visible first, each group ascending
    m = int(counts[0])
    return order[:, :masks.shape[1] - m].contiguous(), order[:, masks.shape[1] - m:].contiguous()
