"""Body-part segmentation drawn with the official 29-class palette."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from sapiens2.data.specs import seg_classes

from ._arrays import as_rgb_image, check_map, row_bands


def _palette(palette: np.ndarray | None) -> np.ndarray:
    palette = seg_classes().palette if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must have shape (classes, 3), got {palette.shape}")
    return palette.astype(np.uint8)


def _labels(labels: np.ndarray, hw: tuple[int, int], classes: int) -> np.ndarray:
    labels = check_map(labels, hw, "labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must be in [0, {classes - 1}], got [{labels.min()}, {labels.max()}]")
    return labels


def colorize_segmentation(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB, each pixel its class's palette colour."""
    palette = _palette(palette)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got {labels.shape}")
    return palette[_labels(labels, labels.shape, len(palette))]


def overlay_segmentation(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.5,
                         palette: np.ndarray | None = None, include_background: bool = False,
                         legend: bool = False, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Blend class colours on the image: ``round((1 - alpha) * image + alpha * palette[label])`` per pixel.

    Background pixels (class 0) keep the image unless ``include_background``. With ``legend`` a panel
    listing the classes present (swatch + name) is appended on the right, so the result is wider.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = as_rgb_image(image)
    palette = _palette(palette)
    labels = _labels(labels, image.shape[:2], len(palette))
    out = np.empty(image.shape, np.uint8)
    for rows in row_bands(*image.shape[:2]):  # band by band: a few MB of float temporaries at any size
        part, ids = image[rows], labels[rows]
        colours = palette[ids].astype(np.float32)
        blended = np.rint((1.0 - alpha) * part.astype(np.float32) + alpha * colours).astype(np.uint8)
        out[rows] = blended if include_background else np.where((ids > 0)[..., None], blended, part)
    if legend:
        names = list(class_names) if class_names is not None else list(seg_classes().names)
        present = [int(c) for c in np.unique(labels) if include_background or c > 0]
        out = np.concatenate([out, draw_legend(present, out.shape[0], palette, names)], axis=1)
    return out


def draw_legend(class_ids: Sequence[int], height: int, palette: np.ndarray | None = None,
                class_names: Sequence[str] | None = None) -> np.ndarray:
    """A (height, width, 3) uint8 panel: one row per class id with its colour swatch and name."""
    palette = _palette(palette)
    names = list(class_names) if class_names is not None else list(seg_classes().names)
    rows = max(len(class_ids), 1)
    row_h = int(max(8, min(height // 30 + 8, height // rows)))
    scale = row_h / 40.0
    thickness = max(1, round(row_h / 20))
    labels = [names[c] if c < len(names) else str(c) for c in class_ids]
    text_w = max([cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for t in labels] or [0])
    width = int(row_h * 1.5 + text_w + row_h * 0.5)
    panel = np.zeros((height, width, 3), dtype=np.uint8)
    for row, (cid, text) in enumerate(zip(class_ids, labels)):
        top = row * row_h
        if top + row_h > height:
            break  # no room left; a taller image would be needed
        pad = max(1, row_h // 8)
        colour = tuple(int(v) for v in palette[cid])
        cv2.rectangle(panel, (pad, top + pad), (row_h - pad, top + row_h - pad), colour, -1)
        cv2.putText(panel, text, (int(row_h * 1.25), top + int(row_h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return panel
