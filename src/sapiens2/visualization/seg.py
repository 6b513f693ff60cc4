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
    listing the classes present (swatch + name) is appended on the right, so the result is
    :func:`legend_width` wider (the same width for every image of a given height).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = as_rgb_image(image)
    palette = _palette(palette)
    labels = _labels(labels, image.shape[:2], len(palette))
    out = np.empty(image.shape, np.uint8)
    seen = np.zeros(len(palette), bool)
    table = _blend_table(palette, alpha, include_background).reshape(-1)
    channel = np.arange(3, dtype=np.int32) * 256
    for rows in row_bands(*image.shape[:2]):  # band by band: a few MB of temporaries at any size
        part, ids = image[rows], labels[rows]
        index = (ids.astype(np.int32) * 768)[..., None] + channel
        index += part
        np.take(table, index, out=out[rows], mode="clip")  # "clip": the index is in range; no buffering
        if legend:  # classes present, counted per band (np.unique would sort a full-size copy)
            seen |= np.bincount(ids.ravel(), minlength=len(palette))[:len(palette)] > 0
    if legend:
        names = list(class_names) if class_names is not None else list(seg_classes().names)
        present = [int(c) for c in np.flatnonzero(seen) if include_background or c > 0]
        out = np.concatenate([out, draw_legend(present, out.shape[0], palette, names)], axis=1)
    return out


def _blend_table(palette: np.ndarray, alpha: float, include_background: bool) -> np.ndarray:
    """(classes, 3, 256) uint8: the blended value of each class, channel and image value, with the blend's own
    float32 arithmetic (``rint((1 - alpha) * v + alpha * colour)``), so a lookup gives the same bytes as blending
    every pixel; class 0 keeps the image unless ``include_background``."""
    values = np.arange(256, dtype=np.float32)
    colours = palette.astype(np.float32)[:, :, None]
    table = np.rint((1.0 - alpha) * values + alpha * colours).astype(np.uint8)
    if not include_background:
        table[0] = np.arange(256, dtype=np.uint8)
    return table


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MAX_LEGEND_COLUMNS = 3  # 29 classes fit from 120 px of height; shorter images list the first ones only


def _legend_layout(height: int, names: Sequence[str]) -> tuple[int, int, int, float, int]:
    """(row height, rows per column, column width, font scale, thickness) of a legend panel.

    It depends only on the image height and the class names (not on which classes are present), so every frame of
    a video gets the same panel width. Rows are 12-28 px (readable at any image size); when all classes do not fit
    in one column at that height, up to three columns are used rather than leaving classes out."""
    row_h = int(min(28, max(12, height // 30)))
    rows = max(1, height // row_h)
    scale = row_h / 40.0
    thickness = max(1, round(row_h / 20))
    text_w = max([cv2.getTextSize(t, _FONT, scale, thickness)[0][0] for t in names] or [0])
    column_w = int(row_h * 1.25 + text_w + row_h * 0.5)  # swatch, gap, the longest name, margin
    return row_h, rows, column_w, scale, thickness


def legend_width(height: int, class_names: Sequence[str] | None = None) -> int:
    """Width in pixels of the panel :func:`draw_legend` makes for an image ``height`` tall (the same whatever
    classes are present)."""
    names = list(class_names) if class_names is not None else list(seg_classes().names)
    _, rows, column_w, _, _ = _legend_layout(height, names)
    return column_w * min(_MAX_LEGEND_COLUMNS, max(1, -(-len(names) // rows)))


def draw_legend(class_ids: Sequence[int], height: int, palette: np.ndarray | None = None,
                class_names: Sequence[str] | None = None) -> np.ndarray:
    """A (height, :func:`legend_width`, 3) uint8 panel: per class id its colour swatch and name, top to bottom,
    then in further columns; every name is inside the panel."""
    palette = _palette(palette)
    names = list(class_names) if class_names is not None else list(seg_classes().names)
    row_h, rows, column_w, scale, thickness = _legend_layout(height, names)
    panel = np.zeros((height, legend_width(height, names), 3), dtype=np.uint8)
    pad = max(1, row_h // 8)
    for i, cid in enumerate(class_ids):
        column, row = divmod(i, rows)
        left, top = column * column_w, row * row_h
        if left + column_w > panel.shape[1]:
            break  # no room left (images under 120 px tall)
        text = names[cid] if cid < len(names) else str(cid)
        colour = tuple(int(v) for v in palette[cid])
        cv2.rectangle(panel, (left + pad, top + pad), (left + row_h - pad, top + row_h - pad), colour, -1)
        cv2.putText(panel, text, (left + int(row_h * 1.25), top + int(row_h * 0.75)), _FONT, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return panel
