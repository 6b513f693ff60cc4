"""Pointmap and depth metrics in metres (after the model's scale), streamed over a dataset."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ._arrays import batch_mask, check_same, vectors
from .normal import NormalMetrics


def sobel_normals(pointmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) unit normals of an (H, W, 3) pointmap from 5x5 Sobel derivatives (as the official evaluator), and
    the (H, W) bool where they are defined (non-zero cross product; OpenCV's mirrored border makes the derivative
    across the image edge exactly 0 there)."""
    pm = np.ascontiguousarray(pointmap, np.float32)
    gx = cv2.Sobel(pm, cv2.CV_32F, 1, 0, ksize=5)
    gy = cv2.Sobel(pm, cv2.CV_32F, 0, 1, ksize=5)
    n = np.cross(gx, gy)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return n / (length + 1e-6), length[..., 0] > 0


class PointmapMetrics:
    """3D point errors, depth (Z) errors and, optionally, the angular error of the normals implied by the pointmaps.

    Points: mean Euclidean distance ``dist_m``, ``l1_m`` (mean absolute error per coordinate), per-axis MAE, RMSE,
    % of points within each distance threshold. Depth, on pixels whose GT Z > 0: ``abs_rel`` = mean |dz| / z,
    ``sq_rel``, ``depth_l1_m``, ``depth_rmse_m``, ``delta1/2/3`` = % with max(z'/z, z/z') < 1.25, 1.25², 1.25³
    (a non-positive predicted Z always fails). ``normal_*`` (``normals=True``): 5x5 Sobel normals of both full maps
    compared on valid pixels, as the official evaluator, except that pixels where the GT normal is undefined (the
    image border row/column, where the official code counts a 90-degree error) are left out.
    """

    def __init__(self, distance_thresholds_m: Sequence[float] = (0.05, 0.10, 0.20), normals: bool = True,
                 angle_thresholds_deg: Sequence[float] = (5.0, 11.25, 22.5, 30.0)):
        self.distance_thresholds = tuple(float(t) for t in distance_thresholds_m)
        self.normals = NormalMetrics(angle_thresholds_deg) if normals else None
        self.reset()

    def reset(self) -> None:
        self.n_points = 0
        self.sums = dict.fromkeys(("dist", "dist_sq", "abs_x", "abs_y", "abs_z"), 0.0)
        self.within = np.zeros(len(self.distance_thresholds), np.int64)
        self.n_depth = 0
        self.depth_sums = dict.fromkeys(("abs_rel", "sq_rel", "l1", "sq"), 0.0)
        self.deltas = np.zeros(3, np.int64)
        if self.normals is not None:
            self.normals.reset()

    def update(self, pred, gt, mask=None, pred_scale=None) -> None:
        """pred, gt: (H, W, 3) or (N, H, W, 3) camera-frame XYZ; gt in metres. pred is in metres too, or, given
        ``pred_scale`` (scalar or (N,)), the raw canonical output that ``pred / pred_scale`` turns into metres.
        mask: (H, W) or (N, H, W), > 0 = valid (default: every pixel with a finite GT point).
        """
        p, g = vectors(pred, "pred pointmap"), vectors(gt, "gt pointmap")
        check_same(p, g, "pred and gt pointmaps")
        if pred_scale is not None:
            s = np.asarray(pred_scale, np.float64).reshape(-1)
            if s.size not in (1, p.shape[0]) or not np.all(s > 0):
                raise ValueError(f"pred_scale must be positive, one value or one per image; got {pred_scale!r}")
            p = p / np.broadcast_to(s, (p.shape[0],))[:, None, None, None]
        valid = batch_mask(mask, g.shape) & np.isfinite(g).all(-1)
        p = np.nan_to_num(p)
        diff = p[valid] - g[valid]
        dist = np.linalg.norm(diff, axis=-1)
        self.n_points += dist.size
        self.sums["dist"] += dist.sum()
        self.sums["dist_sq"] += (dist * dist).sum()
        for axis, key in enumerate(("abs_x", "abs_y", "abs_z")):
            self.sums[key] += np.abs(diff[:, axis]).sum()
        self.within += np.array([(dist < t).sum() for t in self.distance_thresholds], np.int64)

        zp, zg = p[valid][:, 2], g[valid][:, 2]
        positive = zg > 0
        zp, zg = zp[positive], zg[positive]
        dz = zp - zg
        self.n_depth += zg.size
        self.depth_sums["abs_rel"] += (np.abs(dz) / zg).sum()
        self.depth_sums["sq_rel"] += (dz * dz / zg).sum()
        self.depth_sums["l1"] += np.abs(dz).sum()
        self.depth_sums["sq"] += (dz * dz).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(zp > 0, np.maximum(zp / zg, zg / zp), np.inf)
        self.deltas += np.array([(ratio < 1.25 ** k).sum() for k in (1, 2, 3)], np.int64)

        if self.normals is not None:
            for i in range(g.shape[0]):
                if valid[i].any():
                    g_i = np.where(valid[i][..., None], g[i], 0.0)
                    gt_n, defined = sobel_normals(g_i)
                    self.normals.add_angles(_angles(sobel_normals(p[i])[0], gt_n, valid[i] & defined))

    def compute(self) -> dict:
        n, nd = self.n_points, self.n_depth
        nan = float("nan")
        out = {"dist_m": self.sums["dist"] / n if n else nan,
               "l1_m": (self.sums["abs_x"] + self.sums["abs_y"] + self.sums["abs_z"]) / (3 * n) if n else nan,
               "x_mae_m": self.sums["abs_x"] / n if n else nan,
               "y_mae_m": self.sums["abs_y"] / n if n else nan,
               "z_mae_m": self.sums["abs_z"] / n if n else nan,
               "rmse_m": float(np.sqrt(self.sums["dist_sq"] / n)) if n else nan}
        for t, k in zip(self.distance_thresholds, self.within):
            out[f"pct_within_{t * 100:g}cm"] = 100.0 * k / n if n else nan
        out.update({"abs_rel": self.depth_sums["abs_rel"] / nd if nd else nan,
                    "sq_rel": self.depth_sums["sq_rel"] / nd if nd else nan,
                    "depth_l1_m": self.depth_sums["l1"] / nd if nd else nan,
                    "depth_rmse_m": float(np.sqrt(self.depth_sums["sq"] / nd)) if nd else nan})
        for k, count in zip((1, 2, 3), self.deltas):
            out[f"delta{k}_pct"] = 100.0 * count / nd if nd else nan
        if self.normals is not None:
            out.update({f"normal_{k}": v for k, v in self.normals.compute().items() if k != "num_pixels"})
        out["num_points"] = n
        return out


def _angles(pred_n: np.ndarray, gt_n: np.ndarray, valid: np.ndarray) -> np.ndarray:
    dot = np.clip((pred_n[valid] * gt_n[valid]).sum(-1), -1.0, 1.0)
    return np.degrees(np.arccos(dot))
