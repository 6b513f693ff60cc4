"""Stage 1 (CPU task): read the bytes, decode, measure quality, hash, load the sidecar annotation, and shrink the
image to the working size carried to the next stages. Unreadable and corrupt inputs are recorded, never raised."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import cv2
import numpy as np

from sapiens2.io.errors import ImageReadError
from sapiens2.io.images import decode_image

from .columns import new_row, rows_to_batch
from .config import CurateConfig
from .phash import perceptual_hash
from .quality import quality_metrics, quality_reason
from .sources import read_item_bytes, read_sidecar

__all__ = ["decode_row", "decode_batch", "shrink"]

log = logging.getLogger(__name__)


def shrink(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image resized so its long side is at most ``max_side``, and the factor applied."""
    long_side = max(rgb.shape[:2])
    if long_side <= max_side:
        return rgb, 1.0
    f = max_side / long_side
    size = (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), f


def decode_row(row: dict[str, Any], cfg: CurateConfig) -> None:
    try:
        data = read_item_bytes(row)
    except OSError as exc:
        row["error"], row["drop_reason"] = f"cannot read: {exc}", "unreadable"
        return
    row["sha1"] = hashlib.sha1(data).hexdigest()
    try:
        rgb = decode_image(data, name=str(row["source"]), max_pixels=cfg.quality.max_pixels).rgb  # from the header
    except ImageReadError as exc:
        row["error"], row["drop_reason"] = exc.reason, "corrupt"
        return
    except Exception as exc:  # any decoder failure is a property of this file, not of the run
        row["error"], row["drop_reason"] = f"decoder failed: {exc}", "corrupt"
        return
    h, w = rgb.shape[:2]
    row["height"], row["width"] = h, w
    if h * w > cfg.quality.max_pixels:
        row["error"], row["drop_reason"] = f"{w}x{h} exceeds max_pixels {cfg.quality.max_pixels}", "corrupt"
        return
    try:
        annotation = read_sidecar(row)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable annotation of %s: %s", row["source"], exc)
        annotation = None
    row["annotation"] = json.dumps(annotation) if annotation is not None else ""
    work, factor = shrink(rgb, cfg.quality.work_max_side)
    metrics = quality_metrics(work, (h, w))
    row.update(metrics)
    row["phash"] = f"{perceptual_hash(work):016x}"
    row["scale"] = factor
    row["image"] = work
    row["drop_reason"] = quality_reason(metrics, cfg.quality)
    if row["drop_reason"] and not cfg.score_all:
        row["image"] = np.zeros((1, 1, 3), np.uint8)


def decode_batch(batch: dict[str, np.ndarray], cfg: CurateConfig) -> dict[str, np.ndarray]:
    """Listing rows -> rows with every column (see ``columns``)."""
    listing = [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in zip(batch, values)}
               for values in zip(*batch.values())]
    rows = [new_row(item) for item in listing]
    for row in rows:
        decode_row(row, cfg)
    return rows_to_batch(rows)
