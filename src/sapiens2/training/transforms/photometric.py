"""Image-only augmentations (targets untouched): colour distortion, blur, noise, solarise, dropout, down-up sampling.

Each takes an (H, W, 3) uint8 RGB image and a ``numpy.random.Generator`` and returns a new uint8 image. Colour
changes are only used for tasks whose target does not depend on colour (never albedo; see ``recipes.py``).
Ranges are the official ones (``PhotoMetricDistortion``: brightness ±32, contrast and saturation 0.5–1.5,
hue ±18 on OpenCV's 0–180 scale; Gaussian noise variance 5–20 on the 0–255 scale).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["photometric_distortion", "gaussian_blur", "median_blur", "gaussian_noise", "solarize",
           "coarse_dropout", "down_up_sample"]


def _clip_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: float = 32,
                           contrast_range: tuple[float, float] = (0.5, 1.5),
                           saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """Random brightness, contrast (before or after), saturation and hue, each applied with probability 1/2."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img = img + rng.uniform(-brightness_delta, brightness_delta)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        img = img * rng.uniform(*contrast_range)
    img = _clip_u8(img)
    if rng.random() < 0.5 or rng.random() < 0.5:  # saturation or hue: work in HSV once
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        if rng.random() < 0.5:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation_range), 0, 255)
        if rng.random() < 0.5:
            hsv[..., 0] = np.mod(hsv[..., 0] + rng.integers(-hue_delta, hue_delta + 1), 180)
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.random() < 0.5:
        img = _clip_u8(img.astype(np.float32) * rng.uniform(*contrast_range))
    return img


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, kernel_size: int = 3,
                  sigma_range: tuple[float, float] = (0.1, 2.0)) -> np.ndarray:
    sigma = rng.uniform(*sigma_range)
    return cv2.GaussianBlur(image, (kernel_size, kernel_size), sigmaX=sigma, sigmaY=sigma)


def median_blur(image: np.ndarray, rng: np.random.Generator, max_kernel: int = 7) -> np.ndarray:
    kernel = int(rng.choice(np.arange(3, max_kernel + 1, 2)))
    return cv2.medianBlur(np.ascontiguousarray(image), kernel)


def gaussian_noise(image: np.ndarray, rng: np.random.Generator,
                   var_range: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    sigma = float(np.sqrt(rng.uniform(*var_range)))
    return _clip_u8(image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32))


def solarize(image: np.ndarray, rng: np.random.Generator, threshold: int = 128) -> np.ndarray:
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def coarse_dropout(image: np.ndarray, rng: np.random.Generator, size_range: tuple[float, float] = (0.2, 0.4),
                   fill: int = 0) -> np.ndarray:
    """Blank one rectangle whose sides are ``size_range`` fractions of the image's (official: one hole, 20–40%)."""
    h, w = image.shape[:2]
    rh, rw = int(h * rng.uniform(*size_range)), int(w * rng.uniform(*size_range))
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    out = image.copy()
    out[y:y + rh, x:x + rw] = fill
    return out


def down_up_sample(image: np.ndarray, rng: np.random.Generator,
                   scale_range: tuple[float, float] = (0.1, 0.7)) -> np.ndarray:
    """Lose resolution: shrink by a random factor, then enlarge back (official ``RandomDownUpSampleImage``)."""
    h, w = image.shape[:2]
    s = rng.uniform(*scale_range)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
