"""Per-pixel predictions (surface normals, depth, albedo) turned into viewable RGB uint8 images."""
from __future__ import annotations

import cv2
import numpy as np

from ._arrays import as_colour, row_bands, valid_mask


def normals_to_rgb(normals: np.ndarray, mask: np.ndarray | None = None, *,
                   background=(0, 0, 0)) -> np.ndarray:
    """(H, W, 3) unit normals (x, y, z) in [-1, 1] -> RGB uint8 with ``round((n + 1) * 127.5)`` per channel.

    Values are clipped to [-1, 1]. Pixels outside ``mask`` or with a NaN/inf component get ``background``.
    """
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise ValueError(f"normals must have shape (H, W, 3), got {normals.shape}")
    mask = None if mask is None else valid_mask(mask, normals.shape[:2])
    fill = as_colour(background, "background").astype(np.uint8)
    rgb = np.empty(normals.shape, np.uint8)
    for rows in row_bands(*normals.shape[:2]):
        part = normals[rows]
        keep = np.isfinite(part).all(axis=2) if mask is None else mask[rows] & np.isfinite(part).all(axis=2)
        rgb[rows] = np.rint((np.clip(np.nan_to_num(part), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
        rgb[rows][~keep] = fill
    return rgb


def depth_to_rgb(depth: np.ndarray, mask: np.ndarray | None = None, *, colormap: int = cv2.COLORMAP_INFERNO,
                 value_range: tuple[float, float] | None = None, background=(0, 0, 0)) -> np.ndarray:
    """(H, W) depth (larger = farther) -> RGB uint8 through an OpenCV colour map, near = warm.

    The valid depths (inside ``mask`` and finite) are mapped linearly from ``value_range = (near, far)``
    (default: their min and max) to colour-map index 255 (near; the bright yellow end of INFERNO) down to
    0 (far; its dark end). Invalid pixels get ``background``. For a pointmap pass its z channel.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H, W), got {depth.shape}")
    keep = valid_mask(mask, depth.shape) & np.isfinite(depth)
    bands = list(row_bands(*depth.shape))
    if value_range is not None:
        near, far = map(float, value_range)
    elif keep.any():  # min and max band by band: no copy of the valid depths
        near = min(float(depth[r][keep[r]].min()) for r in bands if keep[r].any())
        far = max(float(depth[r][keep[r]].max()) for r in bands if keep[r].any())
    else:
        near, far = 0.0, 1.0
    span = far - near
    index = np.empty(depth.shape, np.uint8)
    for rows in bands:
        if span > 0:
            nearness = np.clip((far - np.nan_to_num(depth[rows], nan=far)) / span, 0.0, 1.0)
        else:  # a flat depth (or empty mask): everything is "near"
            nearness = np.ones_like(depth[rows])
        index[rows] = np.rint(nearness * 255.0).astype(np.uint8)
    rgb = cv2.applyColorMap(index, colormap)
    cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB, dst=rgb)
    rgb[~keep] = as_colour(background, "background").astype(np.uint8)
    return rgb


def albedo_to_uint8(albedo: np.ndarray, mask: np.ndarray | None = None, *, background=(0, 0, 0)) -> np.ndarray:
    """(H, W, 3) albedo in [0, 1] (RGB, the model's output scale) -> RGB uint8 ``round(clip(a) * 255)``.

    uint8 input is passed through. Pixels outside ``mask`` or non-finite get ``background``.
    """
    albedo = np.asarray(albedo)
    if albedo.ndim != 3 or albedo.shape[2] != 3:
        raise ValueError(f"albedo must have shape (H, W, 3), got {albedo.shape}")
    keep = valid_mask(mask, albedo.shape[:2])
    if albedo.dtype == np.uint8:
        rgb = albedo.copy()
    else:
        rgb = np.empty(albedo.shape, np.uint8)
        for rows in row_bands(*albedo.shape[:2]):
            part = albedo[rows].astype(np.float32)
            keep[rows] &= np.isfinite(part).all(axis=2)
            rgb[rows] = np.rint(np.clip(np.nan_to_num(part), 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb[~keep] = as_colour(background, "background").astype(np.uint8)
    return rgb


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """(H, W) boolean or [0, 1] float mask -> (H, W) uint8 (0 / 255 for booleans), e.g. to save as PNG."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mask.shape}")
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8) * 255
    if mask.dtype == np.uint8:
        return mask.copy()
    out = np.empty(mask.shape, np.uint8)
    for rows in row_bands(*mask.shape):
        out[rows] = np.rint(np.clip(np.nan_to_num(mask[rows].astype(np.float32)), 0.0, 1.0) * 255.0)
    return out


