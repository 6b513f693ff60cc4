"""The collection-wide decisions taken on the driver once every image has been scored: exact, perceptual-hash and
embedding de-duplication, then cluster balancing. Input and output are plain column dicts (NumPy / lists), so the
same function re-runs cheaply from a manifest with new thresholds."""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .balance import balanced_selection, hierarchical_kmeans, kmeans
from .config import CurateConfig
from .dedup import embedding_duplicates, exact_duplicates, phash_duplicates

__all__ = ["priority_order", "apply_global_stages"]

log = logging.getLogger(__name__)


def priority_order(width, height, aesthetic, names) -> np.ndarray:
    """Indices best first: more pixels, then higher aesthetic score, then source name (first in sorted order)."""
    def key(i):
        a = aesthetic[i]
        return (-int(width[i]) * int(height[i]), -(a if a is not None and not math.isnan(a) else -math.inf), names[i])
    return np.asarray(sorted(range(len(names)), key=key), np.int64)


def apply_global_stages(cols: dict[str, Any], embeddings: list[np.ndarray], cfg: CurateConfig) -> dict[str, Any]:
    """``cols``: uid, source, drop_reason, sha1, phash, width, height, aesthetic (lists, one entry per image).

    Returns new columns: drop_reason (updated), duplicate_of, duplicate_score, cluster, cluster_path."""
    n = len(cols["uid"])
    reasons = list(cols["drop_reason"])
    duplicate_of = [""] * n
    duplicate_score = [math.nan] * n
    cluster = [-1] * n
    cluster_path = [""] * n

    def survivors() -> np.ndarray:
        return np.asarray([i for i in range(n) if not reasons[i]], np.int64)

    def run(reason: str, fn) -> None:
        idx = survivors()
        if len(idx) < 2:
            return
        local_order = priority_order([cols["width"][i] for i in idx], [cols["height"][i] for i in idx],
                                     [cols["aesthetic"][i] for i in idx], [cols["source"][i] for i in idx])
        dropped, partner, score = fn(idx, local_order)
        for k in np.flatnonzero(dropped):
            i = idx[k]
            reasons[i], duplicate_of[i], duplicate_score[i] = reason, cols["uid"][idx[partner[k]]], float(score[k])
        log.info("%s: %d of %d dropped", reason, int(dropped.sum()), len(idx))

    d = cfg.dedup
    if d.exact:
        run("duplicate_exact", lambda idx, order: exact_duplicates([cols["sha1"][i] for i in idx], order))
    if d.phash_max_distance >= 0:
        run("duplicate_near", lambda idx, order: phash_duplicates([cols["phash"][i] for i in idx],
                                                                  d.phash_max_distance, order))

    def emb_of(idx):
        return np.stack([embeddings[i] for i in idx]) if len(idx) else np.zeros((0, 1), np.float32)

    has_emb = all(len(embeddings[i]) for i in survivors())
    if d.embedding_threshold <= 1.0 and has_emb:
        def by_embedding(idx, order):
            x = emb_of(idx)
            groups = kmeans(x, d.within_clusters, seed=cfg.balance.seed)[0] if d.within_clusters > 0 else None
            return embedding_duplicates(x, d.embedding_threshold, order, d.embedding_chunk, groups)
        run("duplicate_embedding", by_embedding)

    b = cfg.balance
    idx = survivors()
    if b.clusters and len(idx) and all(len(embeddings[i]) for i in idx):
        # cluster in uid order so the result does not depend on how rows arrived
        idx = np.asarray(sorted(idx, key=lambda i: cols["uid"][i]), np.int64)
        labels = hierarchical_kmeans(emb_of(idx), list(b.clusters), b.iterations, b.seed)
        for k, i in enumerate(idx):
            cluster[i] = int(labels[k, 0])
            cluster_path[i] = "/".join(str(int(v)) for v in labels[k, ::-1])
        if b.cap_per_cluster > 0 or b.target_total > 0:
            keep = balanced_selection(labels, [cols["uid"][i] for i in idx], b.cap_per_cluster, b.target_total,
                                      b.seed)
            for k in np.flatnonzero(~keep):
                reasons[idx[k]] = "balanced_out"
            log.info("balanced_out: %d of %d dropped", int((~keep).sum()), len(idx))
    return {"drop_reason": reasons, "duplicate_of": duplicate_of, "duplicate_score": duplicate_score,
            "cluster": cluster, "cluster_path": cluster_path}
