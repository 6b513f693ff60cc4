"""Alpha mattes shown as an RGBA cut-out or composited over a colour.

The Sapiens2 matting head outputs alpha and the foreground colour pre-multiplied by alpha, both in [0, 1];
the official composite is ``fg + (1 - alpha) * bg`` over chroma green RGB (0, 177, 64). Without a
predicted foreground, the image itself is the foreground: ``image * alpha + (1 - alpha) * bg``.
"""
from __future__ import annotations

import numpy as np

from ._arrays import alpha_as_float, as_colour, as_rgb_image, check_map, row_bands

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
    alpha = _alpha_map(alpha, image.shape[:2])
    foreground = _foreground_map(foreground, image.shape)
    bg = np.asarray(background)
    if bg.ndim == 3:
        bg = check_map(as_rgb_image(bg, "background"), image.shape, "background image")
    else:
        bg = as_colour(bg, "background")
    out = np.empty(image.shape, np.uint8)
    for rows in row_bands(*image.shape[:2]):  # band by band: a few MB of float temporaries at any size
        part = image[rows]
        weight = alpha_as_float(alpha[rows], part.shape[:2])
        fg = None if foreground is None else foreground[rows]
        back = bg[rows].astype(np.float32) if bg.ndim == 3 else bg
        mixed = _foreground(part, weight, fg) + (1.0 - weight)[..., None] * back
        out[rows] = np.rint(np.clip(mixed, 0.0, 255.0))
    return out


def matte_cutout(image: np.ndarray, alpha: np.ndarray, *, foreground: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 4) RGBA uint8 cut-out: colour from the image (or the un-pre-multiplied ``foreground``),
    alpha channel ``round(alpha * 255)``. Colour is kept where alpha is 0 only when taken from the image."""
    image = as_rgb_image(image)
    alpha = _alpha_map(alpha, image.shape[:2])
    foreground = _foreground_map(foreground, image.shape)
    out = np.empty(image.shape[:2] + (4,), np.uint8)
    for rows in row_bands(*image.shape[:2]):
        part = image[rows]
        weight = alpha_as_float(alpha[rows], part.shape[:2])
        if foreground is None:
            out[rows, :, :3] = part
        else:
            premultiplied = _foreground(part, weight, foreground[rows])
            safe = np.where(weight > 1e-6, weight, 1.0)[..., None]
            out[rows, :, :3] = np.rint(np.clip(np.where(weight[..., None] > 1e-6, premultiplied / safe, 0.0), 0, 255))
        out[rows, :, 3] = np.rint(weight * 255.0)
    return out


def _alpha_map(alpha: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``alpha`` as (H, W) (an (H, W, 1) array is squeezed), checked against the image size."""
    alpha = np.asarray(alpha)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[..., 0]
    return check_map(alpha, hw, "alpha")


def _foreground_map(foreground: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if foreground is None else check_map(np.asarray(foreground), shape, "foreground")
