"""Per-pixel predictions (surface normals, depth, albedo) turned into viewable RGB uint8 images."""
from __future__ import annotations

import cv2
import numpy as np

from ._arrays import as_colour, check_map, row_bands


def normals_to_rgb(normals: np.ndarray, mask: np.ndarray | None = None, *,
                   background=(0, 0, 0)) -> np.ndarray:
    """(H, W, 3) unit normals (x, y, z) in [-1, 1] -> RGB uint8 with ``round((n + 1) * 127.5)`` per channel.

    Values are clipped to [-1, 1]. Pixels outside ``mask`` or with a NaN/inf component get ``background``.
    """
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise ValueError(f"normals must have shape (H, W, 3), got {normals.shape}")
    mask = _mask_or_none(mask, normals.shape[:2])
    fill = as_colour(background, "background").astype(np.uint8)
    rgb = np.empty(normals.shape, np.uint8)
    for rows in row_bands(*normals.shape[:2]):
        part = normals[rows]
        keep = _kept(mask, rows, np.isfinite(part).all(axis=2))
        rgb[rows] = np.rint((np.clip(np.nan_to_num(part), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
        rgb[rows][~keep] = fill
    return rgb


def _mask_or_none(mask: np.ndarray | None, hw: tuple[int, int]) -> np.ndarray | None:
    """``mask`` checked against the image size, not copied: its rows are read band by band (a full-size boolean
    copy and its negation were 2 bytes per pixel of a 24 MP picture's peak)."""
    return None if mask is None else check_map(mask, hw, "mask")


def _kept(mask: np.ndarray | None, rows: slice, finite: np.ndarray) -> np.ndarray:
    """The pixels of band ``rows`` to draw: finite and, when a mask is given, inside it."""
    return finite if mask is None else finite & mask[rows].astype(bool, copy=False)


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
    mask = _mask_or_none(mask, depth.shape)
    bands = list(row_bands(*depth.shape))
    near, far = tuple(map(float, value_range)) if value_range is not None else _valid_range(depth, mask, bands)
    span = far - near
    fill = as_colour(background, "background").astype(np.uint8)
    rgb = np.empty(depth.shape + (3,), np.uint8)
    # band by band, the colour map too: no full-size index, mask or float copies (a 24 MP picture drawn whole
    # held 5 bytes per pixel of them beside its 3)
    for rows in bands:
        if span > 0:
            nearness = np.clip((far - np.nan_to_num(depth[rows], nan=far)) / span, 0.0, 1.0)
        else:  # a flat depth (or empty mask): everything is "near"
            nearness = np.ones_like(depth[rows])
        colours = cv2.applyColorMap(np.rint(nearness * 255.0).astype(np.uint8), colormap)
        rgb[rows] = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB, dst=colours)
        rgb[rows][~_kept(mask, rows, np.isfinite(depth[rows]))] = fill
    return rgb


def _valid_range(depth: np.ndarray, mask: np.ndarray | None, bands: list[slice]) -> tuple[float, float]:
    """(min, max) of the finite depths inside ``mask``, band by band (no copy of them); (0, 1) when there are none."""
    near, far = np.inf, -np.inf
    for rows in bands:
        values = depth[rows][_kept(mask, rows, np.isfinite(depth[rows]))]
        if values.size:
            near, far = min(near, float(values.min())), max(far, float(values.max()))
    return (near, far) if near <= far else (0.0, 1.0)


def albedo_to_uint8(albedo: np.ndarray, mask: np.ndarray | None = None, *, background=(0, 0, 0)) -> np.ndarray:
    """(H, W, 3) albedo in [0, 1] (RGB, the model's output scale) -> RGB uint8 ``round(clip(a) * 255)``.

    uint8 input is passed through. Pixels outside ``mask`` or non-finite get ``background``.
    """
    albedo = np.asarray(albedo)
    if albedo.ndim != 3 or albedo.shape[2] != 3:
        raise ValueError(f"albedo must have shape (H, W, 3), got {albedo.shape}")
    mask = _mask_or_none(mask, albedo.shape[:2])
    fill = as_colour(background, "background").astype(np.uint8)
    rgb = np.empty(albedo.shape, np.uint8)
    for rows in row_bands(*albedo.shape[:2]):
        if albedo.dtype == np.uint8:
            rgb[rows] = albedo[rows]
            finite = np.ones(rgb[rows].shape[:2], bool)
        else:
            part = albedo[rows].astype(np.float32)
            finite = np.isfinite(part).all(axis=2)
            rgb[rows] = np.rint(np.clip(np.nan_to_num(part), 0.0, 1.0) * 255.0).astype(np.uint8)
        rgb[rows][~_kept(mask, rows, finite)] = fill
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


