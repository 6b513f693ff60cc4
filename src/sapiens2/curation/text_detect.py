"""Stage 4 (CPU task): text overlays, captions and watermarks, by OpenCV's MSER character candidates grouped into
lines -- a classic CPU text detector with no model to download (Neumann & Matas' idea, simplified).

Character candidates: MSER regions (on the grey image and its inverse) of plausible size and shape. A text line:
at least ``min_chars_per_line`` candidates of similar height (ratio < 1.6) whose centres lie on one horizontal line
(within 0.35 x height) with gaps below 1.2 x height. Score = area of the line boxes / image area. Scene texture can
form short "lines"; real overlays form long ones -- hence the character-count and area thresholds.
CLIP prompts (``clip_text_prob``) complement it for stylised or translucent watermarks.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .columns import is_dropped, map_rows
from .config import CurateConfig, TextConfig
from .decode import shrink

__all__ = ["text_lines", "text_area_fraction", "text_batch"]


def _candidates(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    mser = cv2.MSER_create(delta=5, min_area=12, max_area=max(64, int(0.02 * h * w)))
    boxes = []
    for image in (gray, 255 - gray):
        _, rects = mser.detectRegions(image)
        if len(rects):
            boxes.append(np.asarray(rects, np.float64).reshape(-1, 4))
    if not boxes:
        return np.zeros((0, 4))
    r = np.concatenate(boxes)
    bw, bh = r[:, 2], r[:, 3]
    ok = (bh >= 6) & (bh <= 0.25 * h) & (bw / bh >= 0.1) & (bw / bh <= 1.5)
    r = np.unique(np.round(r[ok] / 2) * 2, axis=0)  # near-identical nested regions count once
    return r


def text_lines(gray: np.ndarray, min_chars: int) -> list[np.ndarray]:
    """Line boxes (x1, y1, x2, y2) of aligned character candidates."""
    r = _candidates(gray)
    if len(r) < min_chars:
        return []
    order = np.argsort(r[:, 0], kind="stable")
    r = r[order]
    cx, cy, hh = r[:, 0] + r[:, 2] / 2, r[:, 1] + r[:, 3] / 2, r[:, 3]
    used = np.zeros(len(r), bool)
    lines = []
    for i in range(len(r)):
        if used[i]:
            continue
        chain, last = [i], i
        for j in range(i + 1, len(r)):
            if used[j]:
                continue
            similar = max(hh[j], hh[last]) / min(hh[j], hh[last]) < 1.6
            aligned = abs(cy[j] - cy[last]) < 0.35 * hh[last]
            gap = r[j, 0] - (r[last, 0] + r[last, 2])
            if similar and aligned and -0.3 * hh[last] < gap < 1.2 * hh[last] and cx[j] > cx[last]:
                chain.append(j)
                last = j
        if len(chain) >= min_chars:
            used[chain] = True
            c = r[chain]
            lines.append(np.array([c[:, 0].min(), c[:, 1].min(), (c[:, 0] + c[:, 2]).max(),
                                   (c[:, 1] + c[:, 3]).max()]))
    return lines


def text_area_fraction(rgb: np.ndarray, cfg: TextConfig) -> tuple[float, int]:
    work, _ = shrink(rgb, cfg.work_max_side)
    gray = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
    lines = text_lines(gray, cfg.min_chars_per_line)
    if not lines:
        return 0.0, 0
    mask = np.zeros(gray.shape, np.uint8)
    for x1, y1, x2, y2 in lines:
        mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = 1
    return float(mask.mean()), len(lines)


def _row(row: dict[str, Any], cfg: CurateConfig) -> None:
    if cfg.text.method == "none" or row["width"] <= 0 or (is_dropped(row) and not cfg.score_all):
        return
    area, count = text_area_fraction(np.ascontiguousarray(row["image"]), cfg.text)
    row["text_area"], row["text_lines"] = area, count
    if not is_dropped(row) and area > cfg.text.max_text_area:
        row["drop_reason"] = "text_overlay"


def text_batch(batch: dict[str, np.ndarray], cfg: CurateConfig) -> dict[str, np.ndarray]:
    if cfg.text.method not in ("mser", "none"):
        from .config import CurationConfigError

        raise CurationConfigError(f"text.method must be mser or none, got {cfg.text.method!r}")
    return map_rows(batch, lambda row: _row(row, cfg))
