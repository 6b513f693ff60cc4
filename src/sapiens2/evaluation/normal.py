"""Surface-normal metrics: angular error statistics over valid pixels, streamed with a fine histogram."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._arrays import batch_mask, check_same, vectors


def angular_error_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angle in degrees between (..., 3) vectors (each normalised; zero vectors give 90 against anything)."""
    p = pred / np.maximum(np.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)
    g = gt / np.maximum(np.linalg.norm(gt, axis=-1, keepdims=True), 1e-12)
    return np.degrees(np.arccos(np.clip((p * g).sum(axis=-1), -1.0, 1.0)))


def median_from_histogram(counts: np.ndarray, bin_width: float) -> float:
    """The median of the binned values, linearly interpolated inside its bin (exact to ``bin_width``)."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    cdf = np.cumsum(counts)
    half = 0.5 * total
    i = int(np.searchsorted(cdf, half))
    before = cdf[i - 1] if i > 0 else 0
    return float((i + (half - before) / counts[i]) * bin_width)


class NormalMetrics:
    """Mean, median, RMSE of the angular error (degrees) and % of pixels under each threshold (strict ``<``).

    The official evaluator's metrics, with a 0.01-degree histogram for the median (the official uses 0.5-degree
    bins and reports the bin centre). Ground truth vectors of zero length (or non-finite) are not valid.
    """

    def __init__(self, thresholds_deg: Sequence[float] = (5.0, 11.25, 22.5, 30.0), bin_width_deg: float = 0.01):
        self.thresholds = tuple(float(t) for t in thresholds_deg)
        self.bin_width = float(bin_width_deg)
        self.num_bins = int(np.ceil(180.0 / self.bin_width))
        self.reset()

    def reset(self) -> None:
        self.sum = self.sum_sq = 0.0
        self.count = 0
        self.under = np.zeros(len(self.thresholds), np.int64)
        self.hist = np.zeros(self.num_bins, np.int64)

    def update(self, pred, gt, mask=None) -> None:
        """pred, gt: (H, W, 3) or (N, H, W, 3) normals (any length); mask: (H, W) or (N, H, W), > 0 = valid."""
        p, g = vectors(pred, "pred normals"), vectors(gt, "gt normals")
        check_same(p, g, "pred and gt normals")
        valid = batch_mask(mask, g.shape) & np.isfinite(g).all(-1) & (np.linalg.norm(g, axis=-1) > 0)
        self.add_angles(angular_error_deg(np.nan_to_num(p[valid]), g[valid]))

    def add_angles(self, angles_deg: np.ndarray) -> None:
        """Accumulate already-computed angular errors (degrees)."""
        a = np.asarray(angles_deg, np.float64).ravel()
        self.sum += float(a.sum())
        self.sum_sq += float((a * a).sum())
        self.count += a.size
        self.under += np.array([(a < t).sum() for t in self.thresholds], np.int64)
        idx = np.clip((a / self.bin_width).astype(np.int64), 0, self.num_bins - 1)
        self.hist += np.bincount(idx, minlength=self.num_bins)

    def compute(self) -> dict:
        n = self.count
        out = {"mean_deg": self.sum / n if n else float("nan"),
               "median_deg": median_from_histogram(self.hist, self.bin_width),
               "rmse_deg": float(np.sqrt(self.sum_sq / n)) if n else float("nan")}
        for t, k in zip(self.thresholds, self.under):
            out[f"pct_within_{t:g}deg"] = 100.0 * k / n if n else float("nan")
        out["num_pixels"] = n
        return out
