"""Whole-body keypoints (the official 308-point set) drawn with the official colours and skeleton."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from sapiens2.data.specs import KeypointInfo, keypoint_info

from ._arrays import as_rgb_image

_SHIFT = 4  # cv2 fixed-point bits: draws at 1/16 pixel precision
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Keypoints scoring at or below this are not drawn (nor their links): low scores are guesses, mostly wrong.
KEYPOINT_SCORE_THRESHOLD = 0.3


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


def _label_size(text: str, font_scale: float, thickness: int) -> tuple[int, int, int, int]:
    """(width, height, baseline, padding) of a filled label."""
    (w, h), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
    pad = max(1, thickness)
    return w + 2 * pad, h + baseline + 2 * pad, baseline, pad


def label_box(text: str, box: Sequence[float], image_size: tuple[int, int], font_scale: float,
              thickness: int) -> tuple[int, int, int, int]:
    """Where a person's label goes: (left, top, right, bottom), right/bottom exclusive.

    Above the box's top-left corner, or just inside the box when there is no room above; then moved as little as
    needed to be inside the image (people at the image edge keep a readable label)."""
    height, width = image_size
    w, h, _, _ = _label_size(text, font_scale, thickness)
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    top = y1 - h if y1 - h >= 0 else y1
    left = min(max(x1, 0), max(width - w, 0))
    top = min(max(top, 0), max(height - h, 0))
    return left, top, left + w, top + h


def _draw_label(canvas: np.ndarray, text: str, box: Sequence[float], colour: tuple[int, int, int],
                font_scale: float, thickness: int) -> None:
    left, top, right, bottom = label_box(text, box, canvas.shape[:2], font_scale, thickness)
    _, _, baseline, pad = _label_size(text, font_scale, thickness)
    cv2.rectangle(canvas, (left, top), (right - 1, bottom - 1), colour, -1)
    ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else (255, 255, 255)
    cv2.putText(canvas, text, (left + pad, bottom - pad - baseline), _FONT, font_scale, ink, thickness,
                cv2.LINE_AA)


def draw_poses(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None, *,
               boxes: np.ndarray | None = None, track_ids: Sequence[int] | None = None,
               threshold: float = KEYPOINT_SCORE_THRESHOLD, radius: int | None = None,
               thickness: int | None = None, draw_skeleton: bool = True,
               info: KeypointInfo | None = None) -> np.ndarray:
    """Draw people's keypoints, skeleton links, boxes and track ids on a copy of an RGB uint8 image.

    ``keypoints`` (P, K, 2) or (K, 2) in pixel (x, y); ``scores`` (P, K) or (K,) (None: all shown);
    a keypoint is drawn when its score > ``threshold`` and a link when both its ends are. ``boxes`` (P, 4)
    are (x1, y1, x2, y2), each drawn in its person's colour (:func:`track_colour`) with an "id N" label kept
    inside the image; N is ``track_ids[p]`` in videos, else the person's index ``p`` (the ``id`` of the pose
    JSON). K must equal the keypoint set's size (308 for the official set). ``radius``/``thickness`` default
    to :func:`default_sizes`.
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
            pid = p if track_ids is None else int(track_ids[p])
            colour = track_colour(pid)
            cv2.rectangle(canvas, _fixed(x1, y1), _fixed(x2, y2), colour, thickness, cv2.LINE_AA, _SHIFT)
            _draw_label(canvas, f"id {pid}", (x1, y1), colour, font_scale, max(1, thickness))

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
