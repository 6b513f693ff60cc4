"""Albedo metrics over valid pixels: MAE (L1), RMSE, PSNR, gradient L1 and masked SSIM, streamed."""
from __future__ import annotations

import cv2
import numpy as np

from ._arrays import batch_mask, check_same, vectors


def masked_ssim_sum(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, data_range: float) -> tuple[float, int]:
    """Sum and count of SSIM over windows with > 50% valid support (Gaussian 11x11, sigma 1.5, statistics
    normalised by the mask, channels averaged), as the official albedo evaluator. pred, gt: (H, W, 3); mask (H, W).
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = mask.astype(np.float64)

    def blur(x: np.ndarray) -> np.ndarray:  # zero padding outside the image, like a padded convolution
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_CONSTANT)

    support = blur(m)
    norm = np.maximum(support, 1e-8)[..., None]
    x, y, mm = pred.astype(np.float64), gt.astype(np.float64), m[..., None]
    mu_x, mu_y = blur(x * mm) / norm, blur(y * mm) / norm
    var_x = blur(x * x * mm) / norm - mu_x ** 2
    var_y = blur(y * y * mm) / norm - mu_y ** 2
    cov = blur(x * y * mm) / norm - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2) + 1e-8)
    windows = support > 0.5
    return float(ssim.mean(axis=-1)[windows].sum()), int(windows.sum())


class AlbedoMetrics:
    """``mae`` (= L1, channel-averaged), ``rmse``, ``psnr`` (dB, from the MSE pooled over every valid pixel of the
    dataset: ``10 log10(data_range**2 / mse)``), ``grad_l1`` (forward differences, both pixels valid) and ``ssim``.
    Inputs are RGB in [0, data_range] (1.0 for float albedo, 255 for 8-bit).
    """

    def __init__(self, data_range: float = 1.0, ssim: bool = True):
        if data_range <= 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        self.data_range = float(data_range)
        self.with_ssim = ssim
        self.reset()

    def reset(self) -> None:
        self.sum_abs = self.sum_sq = self.sum_grad = self.sum_ssim = 0.0
        self.n_pixels = self.n_grad = self.n_ssim = 0

    def update(self, pred, gt, mask=None) -> None:
        """pred, gt: (H, W, 3) or (N, H, W, 3); mask: (H, W) or (N, H, W), > 0 = valid (default: all pixels)."""
        p, g = vectors(pred, "pred albedo"), vectors(gt, "gt albedo")
        check_same(p, g, "pred and gt albedo")
        valid = batch_mask(mask, g.shape) & np.isfinite(g).all(-1)
        g = np.where(valid[..., None], g, 0.0)
        p = np.nan_to_num(p)
        diff = p - g
        self.sum_abs += np.abs(diff).mean(-1)[valid].sum()
        self.sum_sq += (diff * diff).mean(-1)[valid].sum()
        self.n_pixels += int(valid.sum())
        for axis in (1, 2):
            pair = np.logical_and(np.delete(valid, -1, axis), np.delete(valid, 0, axis))
            err = np.abs(np.diff(diff, axis=axis)).mean(-1)
            self.sum_grad += err[pair].sum()
            self.n_grad += int(pair.sum())
        if self.with_ssim:
            for i in range(g.shape[0]):
                s, n = masked_ssim_sum(p[i], g[i], valid[i], self.data_range)
                self.sum_ssim += s
                self.n_ssim += n

    def compute(self) -> dict:
        n = self.n_pixels
        nan = float("nan")
        mse = self.sum_sq / n if n else nan
        out = {"mae": self.sum_abs / n if n else nan, "rmse": float(np.sqrt(mse)) if n else nan,
               "psnr": psnr(mse, self.data_range) if n else nan,
               "grad_l1": self.sum_grad / self.n_grad if self.n_grad else nan}
        if self.with_ssim:
            out["ssim"] = self.sum_ssim / self.n_ssim if self.n_ssim else nan
        out["num_pixels"] = n
        return out


def psnr(mse: float, data_range: float = 1.0) -> float:
    """``10 log10(data_range**2 / mse)`` in dB; MSE is floored at 1e-12 as officially (a perfect match -> 120 dB
    for data_range 1)."""
    return float(10.0 * np.log10(data_range ** 2 / max(mse, 1e-12)))
