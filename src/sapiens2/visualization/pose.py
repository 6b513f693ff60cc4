"""Whole-body keypoints (the official 308-point set) drawn with the official colours and skeleton."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from sapiens2.data.specs import KeypointInfo, keypoint_info

from ._arrays import as_rgb_image

_SHIFT = 4  # cv2 fixed-point bits: draws at 1/16 pixel precision
_ONE = 1 << _SHIFT
_DEFAULT_BOX_COLOUR = (0, 255, 0)


def default_sizes(height: int, width: int) -> tuple[int, int]:
    """(keypoint radius, line thickness) in pixels for an image: ~3 and ~2 at 1024 px, growing linearly."""
    side = max(height, width)
    return max(1, round(side / 350)), max(1, round(side / 600))


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for a track id (golden-ratio hue steps keep neighbours distinct)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _fixed(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def draw_poses(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None, *,
               boxes: np.ndarray | None = None, track_ids: Sequence[int] | None = None,
               threshold: float = 0.3, radius: int | None = None, thickness: int | None = None,
               draw_skeleton: bool = True, info: KeypointInfo | None = None) -> np.ndarray:
    """Draw people's keypoints, skeleton links, boxes and track ids on a copy of an RGB uint8 image.

    ``keypoints`` (P, K, 2) or (K, 2) in pixel (x, y); ``scores`` (P, K) or (K,) (None: all shown);
    a keypoint is drawn when its score > ``threshold`` and a link when both its ends are. ``boxes`` (P, 4)
    are (x1, y1, x2, y2); ``track_ids`` (P,) label the boxes and colour them. K must equal the keypoint
    set's size (308 for the official set). ``radius``/``thickness`` default to :func:`default_sizes`.
    """
    info = info or keypoint_info()
    canvas = as_rgb_image(image).copy()
    height, width = canvas.shape[:2]
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim == 2:
        keypoints = keypoints[None]
    if keypoints.ndim != 3 or keypoints.shape[2] != 2:
        raise ValueError(f"keypoints must have shape (P, K, 2) or (K, 2), got {keypoints.shape}")
    people, count = keypoints.shape[:2]
    if count != info.num_keypoints:
        raise ValueError(f"expected {info.num_keypoints} keypoints per person, got {count}")
    scores = np.ones((people, count)) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.size != people * count:
        raise ValueError(f"scores must have shape ({people}, {count}), got {scores.shape}")
    scores = scores.reshape(people, count)
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) != people:
            raise ValueError(f"got {len(boxes)} boxes for {people} people")
    if track_ids is not None and len(track_ids) != people:
        raise ValueError(f"got {len(track_ids)} track ids for {people} people")
    default_radius, default_thickness = default_sizes(height, width)
    radius = default_radius if radius is None else int(radius)
    thickness = default_thickness if thickness is None else int(thickness)

    if boxes is not None:
        font_scale = max(0.4, max(height, width) / 1500)
        for p, (x1, y1, x2, y2) in enumerate(boxes):
            if not np.isfinite([x1, y1, x2, y2]).all():
                continue
            tid = None if track_ids is None else int(track_ids[p])
            colour = _DEFAULT_BOX_COLOUR if tid is None else track_colour(tid)
            cv2.rectangle(canvas, _fixed(x1, y1), _fixed(x2, y2), colour, thickness, cv2.LINE_AA, _SHIFT)
            if tid is not None:
                origin = (int(x1), max(int(y1) - thickness * 2, int(12 * font_scale * 2)))
                cv2.putText(canvas, f"id {tid}", origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour,
                            max(1, thickness), cv2.LINE_AA)

    visible = (scores > threshold) & np.isfinite(keypoints).all(axis=2)
    for p in range(people):
        if draw_skeleton:
            for (a, b), colour in zip(info.skeleton, info.skeleton_colors):
                if visible[p, a] and visible[p, b]:
                    cv2.line(canvas, _fixed(*keypoints[p, a]), _fixed(*keypoints[p, b]),
                             tuple(int(v) for v in colour), thickness, cv2.LINE_AA, _SHIFT)
        for k in np.flatnonzero(visible[p]):
            x, y = keypoints[p, k]
            if -radius <= x < width + radius and -radius <= y < height + radius:
                cv2.circle(canvas, _fixed(x, y), radius * _ONE, tuple(int(v) for v in info.colors[k]), -1,
                           cv2.LINE_AA, _SHIFT)
    return canvas
