"""Person boxes from a foreground mask (e.g. the seg model's class > 0): one box per connected component."""
from __future__ import annotations

import cv2
import numpy as np

from sapiens2.tasks.detection.boxes import DetectionError, Detections, empty_detections

__all__ = ["boxes_from_mask"]


def boxes_from_mask(mask: np.ndarray, min_area_fraction: float = 0.001, dilate: int = 0,
                    merge: bool = False) -> Detections:
    """Boxes around the connected components (8-connectivity) of ``mask > 0``.

    min_area_fraction: drop components smaller than this fraction of the image (specks);
    dilate: grow the mask by this many pixels first so pieces of one person split by a thin gap join
    (boxes are still fitted to the undilated pixels);
    merge: one box around all kept components (a single-person image).
    Boxes are inclusive pixel corners ``[x0, y0, x1, y1]`` like ``whole_image_box``; scores are 1, sorted by
    descending area."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DetectionError(f"mask must be (H, W), got shape {m.shape}")
    fg = (m > 0).astype(np.uint8)
    if not fg.any():
        return empty_detections()
    grouped = fg
    if dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        grouped = cv2.dilate(fg, kernel)
    _, labels = cv2.connectedComponents(grouped, connectivity=8)
    ys, xs = np.nonzero(fg)  # measure only real foreground pixels, grouped by the (maybe dilated) components
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    ys, xs, lab = ys[order], xs[order], lab[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    areas = np.diff(np.r_[starts, len(lab)])
    boxes = np.stack([np.minimum.reduceat(xs, starts), np.minimum.reduceat(ys, starts),
                      np.maximum.reduceat(xs, starts), np.maximum.reduceat(ys, starts)], axis=1)
    keep = areas >= max(1.0, min_area_fraction * m.size)
    boxes, areas = boxes[keep], areas[keep]
    if len(boxes) == 0:
        return empty_detections()
    b = np.asarray(boxes, np.float32)
    if merge:
        b = np.array([[b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]], np.float32)
        return Detections(b, np.ones(1, np.float32))
    order = np.argsort(-np.asarray(areas), kind="stable")
    return Detections(b[order], np.ones(len(b), np.float32))

