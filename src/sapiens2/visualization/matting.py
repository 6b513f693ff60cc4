"""Alpha mattes shown as an RGBA cut-out or composited over a colour.

The Sapiens2 matting head outputs alpha and the foreground colour pre-multiplied by alpha, both in [0, 1];
the official composite is ``fg + (1 - alpha) * bg`` over chroma green RGB (0, 177, 64). Without a
predicted foreground, the image itself is the foreground: ``image * alpha + (1 - alpha) * bg``.
"""
from __future__ import annotations

import numpy as np

from ._arrays import alpha_as_float, as_colour, as_rgb_image, check_map

#: Chroma green used by the official matting visualisation (RGB).
CHROMA_GREEN = (0, 177, 64)


def _foreground(image: np.ndarray, weight: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    """Pre-multiplied foreground on the 0-255 scale (float32, H x W x 3)."""
    if foreground is None:
        return image.astype(np.float32) * weight[..., None]
    fg = check_map(np.asarray(foreground), image.shape, "foreground").astype(np.float32)
    return np.clip(np.nan_to_num(fg), 0.0, 1.0) * 255.0


def matte_composite(image: np.ndarray, alpha: np.ndarray, *, background=CHROMA_GREEN,
                    foreground: np.ndarray | None = None) -> np.ndarray:
    """Composite over ``background`` (an RGB triple, or an (H, W, 3) uint8 image) -> RGB uint8.

    ``alpha`` (H, W) is float in [0, 1] or uint8; ``foreground`` (H, W, 3) is the model's pre-multiplied
    colour in [0, 1] (optional; default the image times alpha).
    """
    image = as_rgb_image(image)
    weight = alpha_as_float(alpha, image.shape[:2])
    bg = np.asarray(background)
    if bg.ndim == 3:
        bg = as_rgb_image(bg, "background").astype(np.float32)
        check_map(bg, image.shape, "background image")
    else:
        bg = as_colour(bg, "background")
    out = _foreground(image, weight, foreground) + (1.0 - weight)[..., None] * bg
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)


def matte_cutout(image: np.ndarray, alpha: np.ndarray, *, foreground: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 4) RGBA uint8 cut-out: colour from the image (or the un-pre-multiplied ``foreground``),
    alpha channel ``round(alpha * 255)``. Colour is kept where alpha is 0 only when taken from the image."""
    image = as_rgb_image(image)
    weight = alpha_as_float(alpha, image.shape[:2])
    if foreground is None:
        colour = image
    else:
        premultiplied = _foreground(image, weight, foreground)
        safe = np.where(weight > 1e-6, weight, 1.0)[..., None]
        colour = np.rint(np.clip(np.where(weight[..., None] > 1e-6, premultiplied / safe, 0.0), 0, 255))
        colour = colour.astype(np.uint8)
    alpha8 = np.rint(weight * 255.0).astype(np.uint8)
    return np.concatenate([colour, alpha8[..., None]], axis=2)
