"""64-bit perceptual hash (DCT pHash) and near-duplicate pairs by Hamming distance.

Hash: grey image -> 32x32 (area resize) -> 2-D DCT -> the 8x8 lowest frequencies -> bit = coefficient > median
(the DC term is excluded from the median so brightness shifts do not flip bits). Resizing, re-encoding and mild
colour changes move a handful of bits; different images differ in ~32.

Pairs within distance d are found without comparing all pairs: split the 64 bits into d + 1 bands; two hashes
within d bits agree exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared.
"""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np

__all__ = ["perceptual_hash", "hamming", "near_duplicate_pairs"]


def perceptual_hash(rgb: np.ndarray) -> int:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    median = np.median(low[1:])
    bits = (low > median).astype(np.uint64)
    return int((bits << np.arange(63, -1, -1, dtype=np.uint64)).sum())


def hamming(a: int, b: int) -> int:
    return int(bin((int(a) ^ int(b)) & 0xFFFFFFFFFFFFFFFF).count("1"))


def near_duplicate_pairs(hashes: list[int] | np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and Hamming distance <= max_distance."""
    values = [int(h) & 0xFFFFFFFFFFFFFFFF for h in hashes]
    if max_distance < 0 or len(values) < 2:
        return []
    bands = min(64, max_distance + 1)
    edges = np.linspace(0, 64, bands + 1).astype(int)
    found = {}
    for b in range(bands):
        lo, hi = int(edges[b]), int(edges[b + 1])
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(values):
            buckets[(h >> lo) & mask].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    i, j = members[x], members[y]
                    if (i, j) not in found:
                        d = hamming(values[i], values[j])
                        if d <= max_distance:
                            found[(i, j)] = d
    return sorted((i, j, d) for (i, j), d in found.items())
