"""Balancing: spherical k-means on the CLIP embeddings (optionally hierarchical, as in DINOv2's curation), then
sampling with a per-cluster cap so dominant clusters (e.g. frontal standing people) do not drown rare poses,
viewpoints and scenes.

- ``kmeans``: k-means++ seeding (fixed seed), Lloyd iterations on L2-normalised vectors with cosine assignment, in
  torch (GPU when available). Deterministic for a given input order (the pipeline sorts by uid).
- hierarchy ``clusters: [k1, k2, ...]``: level 1 clusters the images into k1, level 2 clusters the k1 centroids
  into k2, ...; each image gets a label per level.
- ``balanced_selection``: with ``cap_per_cluster`` every leaf cluster keeps at most that many; with
  ``target_total`` the budget is split evenly over the top-level clusters (water-filling: a cluster smaller than its
  share gives the rest back), recursively down the levels. Which members of a cluster are kept is a seeded hash of
  the uid, so it does not depend on row order.
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["kmeans", "hierarchical_kmeans", "water_fill", "balanced_selection"]


def kmeans(x: np.ndarray, k: int, iterations: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), centroids (k, D)) of spherical k-means; k is clipped to N."""
    import torch

    data = np.asarray(x, np.float32)
    n = len(data)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, data.shape[1] if data.ndim == 2 else 0), np.float32)
    k = max(1, min(int(k), n))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = torch.from_numpy(data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)).to(device)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist = (1 - t @ t[chosen[0]]).clamp_min(0).cpu().numpy().astype(np.float64)
    for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
        p = dist ** 2
        nxt = int(rng.choice(n, p=p / p.sum())) if p.sum() > 0 else int(rng.integers(n))
        chosen.append(nxt)
        dist = np.minimum(dist, (1 - t @ t[nxt]).clamp_min(0).cpu().numpy())
    centroids = t[chosen].clone()
    labels = torch.zeros(n, dtype=torch.long, device=device)
    for _ in range(iterations):
        new = (t @ centroids.T).argmax(dim=1)
        if _ and torch.equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = t[labels == c]
            if len(members):
                mean = members.mean(dim=0)
                centroids[c] = mean / mean.norm().clamp_min(1e-12)
    return labels.cpu().numpy().astype(np.int64), centroids.cpu().numpy()


def hierarchical_kmeans(x: np.ndarray, levels: list[int], iterations: int = 25, seed: int = 0) -> np.ndarray:
    """(N, L) labels: column 0 = the finest clusters of the images, column l = level-l cluster of the image."""
    labels, centroids = kmeans(x, levels[0], iterations, seed)
    columns = [labels]
    for level, k in enumerate(levels[1:], start=1):
        upper, centroids = kmeans(centroids, k, iterations, seed + level)
        columns.append(upper[columns[-1]])
    return np.stack(columns, axis=1) if len(x) else np.zeros((0, len(levels)), np.int64)


def water_fill(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` as evenly as possible over groups of the given sizes (no group gets more than its size)."""
    alloc = [0] * len(sizes)
    open_ = [i for i, s in enumerate(sizes) if s > 0]
    remaining = budget
    while remaining > 0 and open_:
        share = max(1, remaining // len(open_))
        for i in list(open_):
            give = min(share, sizes[i] - alloc[i], remaining)
            alloc[i] += give
            remaining -= give
            if alloc[i] >= sizes[i]:
                open_.remove(i)
            if remaining == 0:
                break
    return alloc


def _order_key(uid: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{uid}".encode()).hexdigest()


def balanced_selection(labels: np.ndarray, uids: list[str], cap_per_cluster: int = 0, target_total: int = 0,
                       seed: int = 0) -> np.ndarray:
    """Boolean keep mask for rows with (N, L) hierarchical labels (column 0 finest, last column coarsest)."""
    labels = np.asarray(labels).reshape(len(uids), -1)
    n = len(uids)
    keep = np.zeros(n, bool)
    if n == 0:
        return keep
    ranked = {i: _order_key(uids[i], seed) for i in range(n)}

    def select(members: np.ndarray, level: int, budget: int | None) -> None:
        if level < 0:  # leaf members: take the first ones in the seeded order
            chosen = sorted(members.tolist(), key=lambda i: ranked[i])
            limit = len(chosen) if budget is None else budget
            if cap_per_cluster > 0:
                limit = min(limit, cap_per_cluster)
            keep[chosen[:limit]] = True
            return
        groups = [members[labels[members, level] == g] for g in np.unique(labels[members, level])]
        if budget is None:
            for g in groups:
                select(g, level - 1, None)
            return
        sizes = [len(g) if cap_per_cluster <= 0 or level > 0 else min(len(g), cap_per_cluster) for g in groups]
        for g, share in zip(groups, water_fill(sizes, budget)):
            select(g, level - 1, share)

    top = labels.shape[1] - 1
    select(np.arange(n), top, target_total if target_total > 0 else None)
    return keep
