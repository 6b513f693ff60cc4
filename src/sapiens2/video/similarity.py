"""How alike a track and a detection are: box IoU and Object Keypoint Similarity (OKS, the COCO keypoint metric)
with the per-keypoint sigmas of the 308-keypoint set."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) intersection over union."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def keypoint_similarity(track_points: np.ndarray, track_scores: np.ndarray, points: np.ndarray,
                        scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
                        threshold: float = 0.3) -> np.ndarray:
    """OKS between N tracks' keypoints and M detections' keypoints -> (N, M).

    ``exp(-d^2 / (2 * area * (2 sigma)^2))`` averaged over the keypoints confident (score > ``threshold``) in
    both; ``areas`` (M,) are the detections' box areas (COCO uses the segment area; the box is what a top-down
    pipeline has). Pairs with no keypoint confident in both get 0.
    """
    tp = np.asarray(track_points, dtype=np.float64)
    dp = np.asarray(points, dtype=np.float64)
    if tp.size == 0 or dp.size == 0:
        return np.zeros((len(tp), len(dp)))
    kappa2 = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    d2 = ((tp[:, None] - dp[None]) ** 2).sum(axis=3)  # (N, M, K)
    e = d2 / (2.0 * np.maximum(np.asarray(areas, dtype=np.float64), 1.0)[None, :, None] * kappa2[None, None])
    both = (np.asarray(track_scores)[:, None] > threshold) & (np.asarray(scores)[None] > threshold)
    counts = both.sum(axis=2)
    total = np.where(both, np.exp(-e), 0.0).sum(axis=2)
    return np.where(counts > 0, total / np.maximum(counts, 1), 0.0)


__all__ = ["box_iou", "keypoint_similarity"]
