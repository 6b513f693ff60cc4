"""The common detection interface: ``Detections`` (boxes xyxy float32 + scores), NMS in NumPy, image checks."""
from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from sapiens2.errors import Sapiens2Error

__all__ = ["Detections", "PersonDetector", "DetectionError", "DetectorUnavailableError", "empty_detections", "box_iou", "nms",
           "select_detections", "whole_image_box", "check_rgb_image"]


class DetectionError(Sapiens2Error, ValueError):
    """Bad input to a detector or a boxes file that cannot be read."""


class DetectorUnavailableError(Sapiens2Error, RuntimeError):
    """A detector whose backend is not installed (missing package or an OpenCV build without it)."""


class Detections(NamedTuple):
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in image pixels
    scores: np.ndarray  # (N,) float32, higher = more confident (scale depends on the detector)


@runtime_checkable
class PersonDetector(Protocol):
    def detect(self, image_rgb: np.ndarray) -> Detections:
        """Person boxes in an (H, W, 3) uint8 RGB image, sorted by descending score."""


def empty_detections() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


def whole_image_box(height: int, width: int) -> np.ndarray:
    """(1, 4) float32 box covering the image, ``[0, 0, w - 1, h - 1]`` as the official demo uses when no person is
    found (the fallback itself is the caller's policy)."""
    if height < 1 or width < 1:
        raise DetectionError(f"image size must be positive, got {height}x{width}")
    return np.array([[0, 0, width - 1, height - 1]], np.float32)


def check_rgb_image(image_rgb) -> np.ndarray:
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise DetectionError(f"expected an (H, W, 3) RGB numpy image, got {type(image_rgb).__name__} "
                             f"{getattr(image_rgb, 'shape', '')}")
    if image_rgb.dtype != np.uint8:
        raise DetectionError(f"expected a uint8 image (0-255), got dtype {image_rgb.dtype}")
    if min(image_rgb.shape[:2]) < 1:
        raise DetectionError(f"empty image of shape {image_rgb.shape}")
    return image_rgb


def _as_boxes(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise DetectionError(f"boxes must be (N, 4) x1, y1, x2, y2, got shape {b.shape}")
    return b


def box_iou(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """(N, M) IoU of xyxy boxes. ``plus_one`` uses the legacy inclusive-pixel area (w + 1)(h + 1) of the official
    evaluator's NMS."""
    a, b = _as_boxes(a), _as_boxes(b)
    extra = 1.0 if plus_one else 0.0
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + extra, 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + extra, 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3, plus_one: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept boxes, by descending score. A box is dropped when its IoU
    with a kept, higher-scoring box is > ``iou_threshold`` (the official rule keeps overlap <= threshold)."""
    b = _as_boxes(boxes)
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(s) != len(b):
        raise DetectionError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    iou = box_iou(b, b, plus_one)  # N is small (detections of one image), the full matrix is cheap
    suppressed = np.zeros(len(b), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, np.int64)


def select_detections(boxes: np.ndarray, scores: np.ndarray, score_threshold: float,
                      iou_threshold: float | None = 0.3, plus_one: bool = False) -> Detections:
    """Keep scores > threshold and boxes of positive size, apply NMS, return sorted by descending score."""
    b = _as_boxes(boxes).astype(np.float32)
    s = np.asarray(scores, np.float32).reshape(-1)
    ok = (s > score_threshold) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(b).all(axis=1)
    b, s = b[ok], s[ok]
    keep = nms(b, s, iou_threshold, plus_one) if iou_threshold is not None else np.argsort(-s, kind="stable")
    return Detections(b[keep].reshape(-1, 4), s[keep])
