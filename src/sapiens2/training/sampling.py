"""Deterministic data order: a global batch per step, split between processes, independent of resumes.

The stream is the concatenation of per-epoch permutations of the dataset (epoch e shuffled with seed
(seed, e)); step s takes stream items [s*G, (s+1)*G) for a global batch G, and rank r its r-th slice. Each item
carries an augmentation seed (its position in the stream), so a resumed or re-sharded run sees exactly the same
samples and crops.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from ..errors import TrainingConfigError

__all__ = ["GlobalBatchSampler", "stream_items"]


def stream_items(num_items: int, seed: int, start: int, count: int, shuffle: bool = True) -> list[tuple[int, int]]:
    """Items [start, start + count) of the stream as (dataset index, augmentation seed) pairs."""
    out = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, num_items)
        order = np.random.default_rng([seed, epoch]).permutation(num_items) if shuffle else np.arange(num_items)
        take = min(num_items - offset, count - len(out))
        out.extend((int(i), pos + k) for k, i in enumerate(order[offset:offset + take]))
        pos += take
    return out


class GlobalBatchSampler(Sampler):
    """Yields this rank's list of keys for steps ``start_step .. num_steps - 1``."""

    def __init__(self, num_items: int, batch_size: int, num_steps: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0, shuffle: bool = True):
        if num_items < 1:
            raise TrainingConfigError("the dataset is empty")
        self.num_items, self.batch_size, self.num_steps = num_items, batch_size, num_steps
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_step, self.shuffle = start_step, shuffle

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = self.batch_size * self.world_size
        for step in range(self.start_step, self.num_steps):
            items = stream_items(self.num_items, self.seed, step * g, g, self.shuffle)
            yield items[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
