"""Geometric augmentation of an image and its dense targets with one affine warp, so they stay aligned.

A sample is a dict of numpy arrays: ``image`` (H, W, 3) uint8 RGB and any of ``seg`` (H, W) class ids,
``mask`` (H, W) 0/1, ``normal`` / ``pointmap`` / ``albedo`` (H, W, 3) float32, ``K`` (3, 3) intrinsics.
Pixel convention: integer coordinates are pixel centres (as OpenCV's ``warpAffine`` and the synthetic data).

Random scale, crop, rotation and flip are composed into a single 2x3 matrix (input pixel -> output pixel) and
applied once: the image bilinearly, targets with nearest neighbour (labels, masks and geometry must never be
blended across a silhouette). A flip also swaps Left_/Right_ seg classes and negates the x component of
normals and points (camera frame: x right); ``K`` follows the warp, so ``pointmap[v, u] = z K^-1 [u, v, 1]``
still holds afterwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ...errors import TrainingError
from ...data.synth.mirror import class_swap

__all__ = ["GeometryParams", "DENSE_TARGET_KEYS", "resize_matrix", "sample_geometry", "warp_sample",
           "flip_matrix", "rotation_matrix"]

DENSE_TARGET_KEYS = ("seg", "mask", "normal", "pointmap", "albedo")
_VECTOR_KEYS = ("normal", "pointmap")  # camera-frame vectors: their x component flips with the image


@dataclass(frozen=True)
class GeometryParams:
    """The random geometric recipe of one task (probabilities and ranges; see ``recipes.py`` for the values)."""

    scale_prob: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)  # zoom about the centre: > 1 zooms in, < 1 pads
    crop_prob: float = 0.0
    crop_area_range: tuple[float, float] = (1.0, 1.0)  # area fraction of the input kept
    crop_aspect_range: tuple[float, float] = (1.0, 1.0)  # w/h of the crop relative to the input's
    rotate_prob: float = 0.0
    max_rotate_deg: float = 0.0
    flip_prob: float = 0.0


def _h(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return m.copy() if m.shape == (3, 3) else np.vstack([m.reshape(2, 3), [0.0, 0.0, 1.0]])


def resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Pixel-centre-exact resize (3x3): the image edges map to the image edges."""
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def flip_matrix(width: int) -> np.ndarray:
    return np.array([[-1.0, 0, width - 1.0], [0, 1, 0], [0, 0, 1]])


def rotation_matrix(center_xy: tuple[float, float], degrees: float) -> np.ndarray:
    """Rotation about a point (3x3), counter-clockwise on screen for positive ``degrees`` (OpenCV's sense)."""
    return _h(cv2.getRotationMatrix2D((float(center_xy[0]), float(center_xy[1])), float(degrees), 1.0))


def sample_geometry(rng: np.random.Generator, params: GeometryParams, in_hw: tuple[int, int],
                    out_hw: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Draw one random warp: returns the 3x3 matrix input -> output pixels and whether it mirrors."""
    h, w = in_hw
    # Crop window in input pixels (pixel-edge coordinates x0..x1), default: the whole image.
    x0, y0, cw, ch = 0.0, 0.0, float(w), float(h)
    if params.crop_prob > 0 and rng.random() < params.crop_prob:
        area = rng.uniform(*params.crop_area_range) * w * h
        log_lo, log_hi = np.log(params.crop_aspect_range)
        aspect = math.exp(rng.uniform(log_lo, log_hi)) * w / h
        cw, ch = min(w, math.sqrt(area * aspect)), min(h, math.sqrt(area / aspect))
        x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    if params.scale_prob > 0 and rng.random() < params.scale_prob:
        s = rng.uniform(*params.scale_range)
        cx, cy = x0 + cw / 2, y0 + ch / 2
        cw, ch = cw / s, ch / s
        x0, y0 = cx - cw / 2, cy - ch / 2
    # Window (pixel edges) -> output (pixel edges), written for pixel centres.
    sx, sy = out_hw[1] / cw, out_hw[0] / ch
    m = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5], [0, 0, 1]], np.float64)
    if params.rotate_prob > 0 and rng.random() < params.rotate_prob:
        angle = rng.uniform(-params.max_rotate_deg, params.max_rotate_deg)
        m = rotation_matrix(((out_hw[1] - 1) / 2, (out_hw[0] - 1) / 2), angle) @ m
    flipped = bool(params.flip_prob > 0 and rng.random() < params.flip_prob)
    if flipped:
        m = flip_matrix(out_hw[1]) @ m
    return m, flipped


def warp_sample(sample: dict[str, Any], matrix: np.ndarray, out_hw: tuple[int, int],
                flipped: bool = False) -> dict[str, Any]:
    """Apply a 3x3 (or 2x3) input -> output matrix to the image and every dense target in ``sample``.

    ``flipped`` must say whether the matrix mirrors (determinant < 0); it is checked. Rotations are refused when
    the sample carries camera-frame geometry (normal, pointmap, K): an image rotation is not a camera motion
    unless it is about the principal point, so the official recipe never rotates those tasks.
    """
    m = _h(matrix)
    det = np.linalg.det(m[:2, :2])
    if (det < 0) != flipped:
        raise TrainingError(f"flipped={flipped} disagrees with the warp matrix (determinant {det:.3g})")
    if abs(m[0, 1]) > 1e-12 or abs(m[1, 0]) > 1e-12:
        geometric = [k for k in ("normal", "pointmap", "K") if sample.get(k) is not None]
        if geometric:
            raise TrainingError(f"cannot rotate a sample with camera geometry ({', '.join(geometric)})")
    size = (int(out_hw[1]), int(out_hw[0]))
    out = dict(sample)
    out["image"] = cv2.warpAffine(sample["image"], m[:2], size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    for key in DENSE_TARGET_KEYS:
        value = sample.get(key)
        if value is None:
            continue
        src = value.astype(np.uint8) if value.dtype == bool else value
        if src.dtype == np.int64:
            src = src.astype(np.int32)  # OpenCV cannot warp int64
        warped = cv2.warpAffine(src, m[:2], size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0)
        out[key] = warped.astype(value.dtype, copy=False)
    if flipped:
        if out.get("seg") is not None:
            swap = class_swap()
            seg = out["seg"]
            labelled = seg < len(swap)  # keep an ignore value (e.g. 255) as it is
            out["seg"] = np.where(labelled, swap[np.minimum(seg, len(swap) - 1)], seg).astype(seg.dtype)
        for key in _VECTOR_KEYS:
            if out.get(key) is not None:
                out[key] = out[key].copy()
                out[key][..., 0] *= -1
    if sample.get("K") is not None:
        k = m @ np.asarray(sample["K"], np.float64)
        if flipped:  # the camera x axis turns with the mirrored image: keep fx positive, x negated instead
            k[:, 0] *= -1
        out["K"] = k.astype(np.float32)
    return out
