"""Global de-duplication over the whole collection (run on the driver after the streaming stages, so copies are
found across all workers' blocks): identical bytes, perceptual-hash near copies, and embedding nearest neighbours
above a cosine threshold.

Which copy survives: a greedy pass in priority order (larger image first, then higher aesthetic score, then uid);
an image is dropped when an already-kept image of higher priority is its duplicate. Embedding neighbours are found
with blocked matrix products (torch, on the GPU when there is one): memory is one ``chunk x chunk`` block. With
``within_clusters`` > 0 comparisons are restricted to k-means clusters (SemDeDup), which is how it scales to
billions: each cluster is a small all-pairs problem on one machine.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .phash import near_duplicate_pairs

__all__ = ["greedy_prune", "exact_duplicates", "phash_duplicates", "embedding_neighbours", "embedding_duplicates"]


def greedy_prune(priority_order: np.ndarray, pairs: list[tuple[int, int, float]], n: int):
    """Walk ``priority_order`` (indices, best first); drop an index if it pairs with an earlier kept one.

    Returns (dropped bool (n,), duplicate_of int (n,) = the kept partner or -1, score float (n,) of that pair)."""
    neighbours: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for i, j, s in pairs:
        neighbours[i].append((j, s))
        neighbours[j].append((i, s))
    rank = np.empty(n, np.int64)
    rank[np.asarray(priority_order, np.int64)] = np.arange(len(priority_order))
    dropped = np.zeros(n, bool)
    partner = np.full(n, -1, np.int64)
    score = np.full(n, np.nan)
    for i in priority_order:
        for j, s in sorted(neighbours.get(int(i), []), key=lambda t: rank[t[0]]):
            if rank[j] < rank[i] and not dropped[j]:
                dropped[i], partner[i], score[i] = True, j, s
                break
    return dropped, partner, score


def exact_duplicates(digests: list[str], priority_order: np.ndarray):
    groups: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        groups[d].append(i)
    pairs = [(g[a], g[b], 0.0) for g in groups.values() if len(g) > 1
             for a in range(len(g)) for b in range(a + 1, len(g))]
    return greedy_prune(priority_order, pairs, len(digests))


def phash_duplicates(hashes_hex: list[str], max_distance: int, priority_order: np.ndarray):
    pairs = near_duplicate_pairs([int(h, 16) for h in hashes_hex], max_distance)
    return greedy_prune(priority_order, [(i, j, float(d)) for i, j, d in pairs], len(hashes_hex))


def embedding_neighbours(embeddings: np.ndarray, threshold: float, chunk: int = 4096,
                         groups: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """All pairs i < j with cosine similarity >= threshold (rows are normalised here), within ``groups`` if given."""
    import torch

    x = np.asarray(embeddings, np.float32)
    n = len(x)
    if n < 2 or threshold > 1.0:
        return []
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = []
    sets = [np.arange(n)] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for members in sets:
        t = torch.from_numpy(x[members]).to(device)
        for a in range(0, len(members), chunk):
            block = t[a:a + chunk] @ t[a:].T  # only pairs with j >= i's block start
            rows, cols = torch.nonzero(block >= threshold, as_tuple=True)
            values = block[rows, cols]
            rows, cols = rows.cpu().numpy() + a, cols.cpu().numpy() + a
            for r, c, v in zip(rows, cols, values.cpu().numpy()):
                if r < c:
                    pairs.append((int(members[r]), int(members[c]), float(v)))
    return pairs


def embedding_duplicates(embeddings: np.ndarray, threshold: float, priority_order: np.ndarray,
                         chunk: int = 4096, groups: np.ndarray | None = None):
    pairs = embedding_neighbours(embeddings, threshold, chunk, groups)
    return greedy_prune(priority_order, pairs, len(embeddings))
