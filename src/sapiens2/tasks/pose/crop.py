"""Top-down crops: person box -> centre/size -> unbiased (UDP) affine warp to the model input, and back.

Conventions (official Sapiens2): boxes are xyxy in image pixels; sizes are (w, h) after padding x1.25 and fixing
the aspect to the input's w:h (768:1024); the warp maps image x to ``(x - cx + w/2) * (768 - 1) / w`` (no rotation
at inference). Sizes are given as (width, height) throughout, like OpenCV.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

__all__ = [
    "POSE_INPUT_SIZE", "BOX_PADDING", "PoseCrops", "boxes_to_center_size", "fix_aspect_ratio", "udp_warp_matrix",
    "warp_interpolation", "warp_to_crop", "crop_boxes", "image_to_crop", "crop_to_image", "decoded_to_image",
]

POSE_INPUT_SIZE = (768, 1024)  # (w, h) of the official pose crop
BOX_PADDING = 1.25


class PoseCrops(NamedTuple):
    crops: np.ndarray  # (N, h, w, C) same dtype as the image
    centers: np.ndarray  # (N, 2) float64
    sizes: np.ndarray  # (N, 2) float64, (w, h) of the padded, aspect-fixed box
    matrices: np.ndarray  # (N, 2, 3) float32 image -> crop


def _as_pairs(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[-1:] != (2,):
        raise ValueError(f"{name} must have a last axis of 2 (x, y), got shape {arr.shape}")
    return arr


def fix_aspect_ratio(sizes: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow (w, h) so that w / h == aspect_ratio: widen a box too narrow, heighten one too wide."""
    s = _as_pairs("sizes", sizes)
    w, h = s[..., 0], s[..., 1]
    too_wide = w > h * aspect_ratio
    return np.stack([np.where(too_wide, w, h * aspect_ratio), np.where(too_wide, w / aspect_ratio, h)], axis=-1)


def boxes_to_center_size(
    boxes_xyxy: np.ndarray,
    padding: float = BOX_PADDING,
    input_size: tuple[int, int] = POSE_INPUT_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) xyxy boxes -> centres (N, 2) and sizes (N, 2) = (w, h) x padding, aspect fixed to input w:h."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes must be (N, 4) x1, y1, x2, y2, got shape {np.shape(boxes_xyxy)}")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    if np.any(x2 < x1) or np.any(y2 < y1):
        raise ValueError("boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1 (got a box with negative size)")
    centers = np.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5], axis=1)
    sizes = np.stack([x2 - x1, y2 - y1], axis=1) * padding
    sizes = fix_aspect_ratio(sizes, input_size[0] / input_size[1])
    if np.any(sizes <= 0):
        raise ValueError("a box has zero width and height; it cannot be cropped")
    return centers, sizes


def udp_warp_matrix(centers: np.ndarray, sizes: np.ndarray,
                    input_size: tuple[int, int] = POSE_INPUT_SIZE) -> np.ndarray:
    """UDP affine matrices image -> crop, (..., 2, 3) float32 (the official dtype).

    ``M = [[sx, 0, sx*(w/2 - cx)], [0, sy, sy*(h/2 - cy)]]`` with ``s = (input - 1) / size``.
    """
    c = _as_pairs("centers", centers)
    s = _as_pairs("sizes", sizes)
    scale = (np.asarray(input_size, np.float64) - 1) / s
    m = np.zeros(np.broadcast_shapes(c.shape, s.shape)[:-1] + (2, 3), np.float64)
    m[..., 0, 0] = scale[..., 0]
    m[..., 1, 1] = scale[..., 1]
    m[..., 0, 2] = scale[..., 0] * (0.5 * s[..., 0] - c[..., 0])
    m[..., 1, 2] = scale[..., 1] * (0.5 * s[..., 1] - c[..., 1])
    return m.astype(np.float32)


def warp_interpolation(matrix: np.ndarray) -> int:
    """OpenCV flag the official crop uses: bilinear when the crop shrinks the image, bicubic otherwise.

    (The official code asks for INTER_AREA when shrinking; cv2.warpAffine treats that as INTER_LINEAR.)
    """
    m = np.asarray(matrix, np.float64)
    scale = min(np.hypot(m[0, 0], m[0, 1]), np.hypot(m[1, 0], m[1, 1]))
    return cv2.INTER_LINEAR if scale < 1.0 else cv2.INTER_CUBIC


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int] = POSE_INPUT_SIZE,
                 interpolation: int | None = None) -> np.ndarray:
    """Warp an (H, W[, C]) image into an (input_h, input_w[, C]) crop; outside the image is 0."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ValueError(f"image must be an (H, W) or (H, W, C) numpy array, got {type(image).__name__} "
                         f"{getattr(image, 'shape', '')}")
    m = np.asarray(matrix, np.float64).reshape(2, 3)
    flags = warp_interpolation(m) if interpolation is None else interpolation
    return cv2.warpAffine(image, m, (int(input_size[0]), int(input_size[1])), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_boxes(image: np.ndarray, boxes_xyxy: np.ndarray, input_size: tuple[int, int] = POSE_INPUT_SIZE,
               padding: float = BOX_PADDING) -> PoseCrops:
    """All person crops of one image: boxes (N, 4) xyxy -> PoseCrops (crops (N, h, w, C), centres, sizes, matrices)."""
    centers, sizes = boxes_to_center_size(boxes_xyxy, padding, input_size)
    matrices = udp_warp_matrix(centers, sizes, input_size)
    crops = [warp_to_crop(image, m, input_size) for m in matrices]
    shape = (0, int(input_size[1]), int(input_size[0])) + image.shape[2:]
    stacked = np.stack(crops) if crops else np.zeros(shape, image.dtype)
    return PoseCrops(stacked, centers, sizes, matrices)


def image_to_crop(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply warp matrices (..., 2, 3) to points (..., K, 2) (image pixels -> crop pixels), float64."""
    p = _as_pairs("points", points)
    m = np.asarray(matrices, np.float64)
    return np.einsum("...ij,...kj->...ki", m[..., :2], p) + m[..., None, :, 2]


def crop_to_image(points: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Exact inverse of ``image_to_crop`` for axis-aligned (rotation-free) warps: crop pixels -> image pixels."""
    p = _as_pairs("points", points)
    m = np.asarray(matrices, np.float64)
    if np.any(m[..., 0, 1] != 0) or np.any(m[..., 1, 0] != 0):
        raise ValueError("crop_to_image handles axis-aligned warps only (the matrix has a rotation term)")
    scale = np.stack([m[..., 0, 0], m[..., 1, 1]], axis=-1)[..., None, :]
    shift = m[..., None, :, 2]
    return (p - shift) / scale


def decoded_to_image(keypoints: np.ndarray, centers: np.ndarray, sizes: np.ndarray,
                     input_size: tuple[int, int] = POSE_INPUT_SIZE) -> np.ndarray:
    """Codec output (``xy / (heatmap - 1) * input_size``) -> image pixels: ``xy / input * size + centre - size/2``.

    keypoints (N, K, 2), centres and sizes (N, 2). Paired with the UDP warp this is exact for heatmap peaks
    (see codec.py); it is *not* the inverse of the warp for crop pixels (use ``crop_to_image`` for those).
    """
    kp = _as_pairs("keypoints", keypoints)
    c = _as_pairs("centers", centers)[..., None, :]
    s = _as_pairs("sizes", sizes)[..., None, :]
    return kp / np.asarray(input_size, np.float64) * s + c - 0.5 * s
