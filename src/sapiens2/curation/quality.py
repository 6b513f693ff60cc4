"""Basic image quality: size, sharpness, exposure and contrast, and the drop reason they imply.

Sharpness is the variance of the Laplacian of the grey image reduced to at most 512 px on its long side (so the
number does not grow with the resolution); exposure is the share of clipped pixels; contrast the grey-level std.
"""
from __future__ import annotations

import cv2
import numpy as np

from .config import QualityConfig

__all__ = ["quality_metrics", "quality_reason", "QUALITY_REASONS"]

QUALITY_REASONS = ("too_small", "flat", "overexposed", "underexposed", "blurry")
_MEASURE_SIDE = 512


def quality_metrics(rgb: np.ndarray, original_hw: tuple[int, int] | None = None) -> dict[str, float]:
    h, w = original_hw if original_hw is not None else rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    long_side = max(gray.shape)
    if long_side > _MEASURE_SIDE:  # never upscale: interpolation would make a small sharp image look blurred
        f = _MEASURE_SIDE / long_side
        size = (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return {
        "short_side": float(min(h, w)),
        "blur": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
        "brightness": float(gray.mean()),
        "bright_fraction": float((gray >= 250).mean()),
        "dark_fraction": float((gray <= 5).mean()),
        "contrast": float(gray.std()),
    }


def quality_reason(m: dict[str, float], cfg: QualityConfig) -> str:
    """The first failed check, in the order of QUALITY_REASONS, or "" when the image passes."""
    if m["short_side"] < cfg.min_short_side:
        return "too_small"
    if m["contrast"] < cfg.min_contrast:
        return "flat"
    if m["bright_fraction"] > cfg.max_bright_fraction:
        return "overexposed"
    if m["dark_fraction"] > cfg.max_dark_fraction:
        return "underexposed"
    if m["blur"] < cfg.min_blur:
        return "blurry"
    return ""
