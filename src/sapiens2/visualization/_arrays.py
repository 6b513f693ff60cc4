"""Input checks shared by the visualisation functions, so every one fails with the same clear words."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Pixels per band of the full-resolution drawing passes: their float32 temporaries stay a few MB whatever the
#: image size (a 24-megapixel image drawn in one go made three 288 MB float32 copies).
BAND_PIXELS = 256 * 1024


def row_bands(height: int, width: int, pixels: int | None = None) -> Iterator[slice]:
    """Slices of rows covering ``height``, each at most ``pixels`` (default :data:`BAND_PIXELS`) pixels."""
    rows = max(1, (BAND_PIXELS if pixels is None else pixels) // max(1, width))
    for top in range(0, height, rows):
        yield slice(top, min(height, top + rows))


def as_rgb_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """A uint8 (H, W, 3) RGB array; (H, W) grayscale is expanded. Raises ValueError otherwise."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3), got {image.shape}")
    return image


def check_map(values: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != shape:
        raise ValueError(f"{what} must have shape {shape}, got {values.shape}")
    return values


def valid_mask(mask: np.ndarray | None, hw: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) foreground mask; all True when ``mask`` is None."""
    if mask is None:
        return np.ones(hw, dtype=bool)
    return check_map(mask, hw, "mask").astype(bool)


def as_colour(colour, what: str = "colour") -> np.ndarray:
    colour = np.asarray(colour, dtype=np.float32).reshape(-1)
    if colour.shape != (3,):
        raise ValueError(f"{what} must be an RGB triple, got {colour.tolist()}")
    return colour


def alpha_as_float(alpha: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Alpha as float32 in [0, 1]: uint8 is divided by 255, floats are clipped, NaN counts as 0."""
    alpha = np.asarray(alpha)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[..., 0]
    alpha = check_map(alpha, hw, "alpha")
    if alpha.dtype == np.uint8:
        return alpha.astype(np.float32) / 255.0
    return np.clip(np.nan_to_num(alpha.astype(np.float32), nan=0.0), 0.0, 1.0)
