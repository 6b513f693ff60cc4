"""Histogram plots drawn with OpenCV (no plotting library needed): kept vs dropped bars and threshold lines."""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["histogram_image"]

_W, _H, _PAD = 520, 300, 44


def _text(img, s, org, scale=0.4, colour=(30, 30, 30)):
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def histogram_image(title: str, kept: np.ndarray, dropped: np.ndarray, bins: int = 40,
                    thresholds: list[float] | None = None) -> np.ndarray:
    """(H, W, 3) RGB image: stacked histogram (kept green, dropped red) of the finite values."""
    kept = np.asarray(kept, np.float64)
    dropped = np.asarray(dropped, np.float64)
    kept, dropped = kept[np.isfinite(kept)], dropped[np.isfinite(dropped)]
    img = np.full((_H, _W, 3), 255, np.uint8)
    _text(img, title, (8, 16), 0.5)
    values = np.concatenate([kept, dropped])
    if len(values) == 0:
        _text(img, "no values", (_W // 2 - 30, _H // 2))
        return img
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    hk, _ = np.histogram(kept, edges)
    hd, _ = np.histogram(dropped, edges)
    top = max(1, int((hk + hd).max()))
    x0, y0, x1, y1 = _PAD, _H - _PAD, _W - 12, 28
    cv2.rectangle(img, (x0, y1), (x1, y0), (180, 180, 180), 1)
    bw = (x1 - x0) / bins
    for b in range(bins):
        xa, xb = int(x0 + b * bw) + 1, int(x0 + (b + 1) * bw) - 1
        hk_px = int((y0 - y1) * hk[b] / top)
        hd_px = int((y0 - y1) * hd[b] / top)
        if hk_px:
            cv2.rectangle(img, (xa, y0 - hk_px), (xb, y0), (60, 160, 60), -1)
        if hd_px:
            cv2.rectangle(img, (xa, y0 - hk_px - hd_px), (xb, y0 - hk_px), (200, 70, 60), -1)
    for t in thresholds or []:
        if t is not None and math.isfinite(t) and lo <= t <= hi:
            x = int(x0 + (t - lo) / (hi - lo) * (x1 - x0))
            cv2.line(img, (x, y1), (x, y0), (40, 40, 220), 1)
    _text(img, f"{lo:.3g}", (x0, y0 + 16))
    _text(img, f"{hi:.3g}", (x1 - 50, y0 + 16))
    _text(img, f"max {top}", (x0 - 40, y1 + 10))
    _text(img, f"kept {len(kept)}  dropped {len(dropped)}", (x0 + 150, _H - 8))
    return img
