"""Dataset keys: an index, or an (index, augmentation seed) pair, so that augmentation is reproducible."""
from __future__ import annotations

import numpy as np

__all__ = ["item_rng"]


def item_rng(key, dataset_seed: int, length: int) -> tuple[int, np.random.Generator]:
    """Split a key into the item index and the random generator of its augmentation.

    A plain index gets a generator fixed by (dataset seed, index): the same crop every time it is read. A pair
    ``(index, seed)`` (from the training sampler, unique per draw) gives a new augmentation per epoch that is still
    identical across resumes, worker counts and processes.
    """
    if isinstance(key, (tuple, list)):
        index, seed = int(key[0]), int(key[1])
        entropy = [dataset_seed, seed, index]
    else:
        index = int(key)
        entropy = [dataset_seed, index]
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index % length, np.random.default_rng(entropy)
