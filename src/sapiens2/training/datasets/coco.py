"""COCO-style keypoint annotations: 308 official keypoints, or COCO-WholeBody 133 mapped into the 308 layout.

Accepted files (``images``, ``annotations``, optional ``categories``):
- 308 layout: ``keypoints`` = [x1, y1, v1, ... x308, y308, v308] (what the synthetic generator writes).
- COCO-WholeBody: either a flat 133-point ``keypoints`` list, or the original split fields ``keypoints`` (17 body)
  + ``foot_kpts`` (6) + ``face_kpts`` (68) + ``lefthand_kpts`` (21) + ``righthand_kpts`` (21). Only the points
  whose 308 counterpart is a direct name match are labelled; every other 308 point is unlabelled (v = 0).
Boxes are ``bbox`` = [x, y, w, h]; crowd annotations and people with no labelled keypoint are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ...data.specs import keypoint_info
from .files import DatasetError, read_json

__all__ = ["PersonRecord", "ImageRecord", "CocoKeypoints", "read_coco_keypoints", "wholebody_to_308"]

_WHOLEBODY_PARTS = (("keypoints", 17), ("foot_kpts", 6), ("face_kpts", 68), ("lefthand_kpts", 21),
                    ("righthand_kpts", 21))


@dataclass(frozen=True)
class ImageRecord:
    id: int
    path: Path
    height: int
    width: int
    info: dict[str, Any]  # the raw ``images`` entry (dense file names, intrinsics, ...)


@dataclass(frozen=True)
class PersonRecord:
    ann_id: int
    image_id: int
    bbox_xyxy: np.ndarray  # (4,) float64
    keypoints: np.ndarray  # (308, 3) float64: x, y, visibility (0 = unlabelled)
    area: float


@dataclass(frozen=True)
class CocoKeypoints:
    images: dict[int, ImageRecord]
    people: list[PersonRecord]
    layout: str  # "keypoints308" or "coco_wholebody133"
    raw: dict[str, Any]  # the parsed file, for the evaluation (pycocotools takes it as ground truth)


@lru_cache(maxsize=None)
def _wholebody_map() -> tuple[np.ndarray, np.ndarray]:
    """(target indices in the 133 layout, their 308 indices) for the direct name matches only."""
    from ...tasks.pose.formats import keypoint_format
    fmt = keypoint_format("coco_wholebody133")
    direct = np.array([len(s) == 1 for s in fmt.sources])
    return np.nonzero(direct)[0], fmt.first[direct]


def wholebody_to_308(points133: np.ndarray) -> np.ndarray:
    """(133, 3) COCO-WholeBody keypoints -> (308, 3), unlabelled where there is no direct match.

    Two 133 points name the same 308 point (body wrist and hand root): the first labelled one (the body's) wins.
    """
    src, dst = _wholebody_map()
    out = np.zeros((keypoint_info().num_keypoints, 3), np.float64)
    for s, d in zip(src[::-1], dst[::-1]):  # reversed, so the earliest labelled source is written last
        if points133[s, 2] > 0 or out[d, 2] <= 0:
            out[d] = points133[s]
    return out


def _keypoints_of(ann: dict[str, Any], where: str) -> tuple[np.ndarray, str]:
    n308 = keypoint_info().num_keypoints
    if "foot_kpts" in ann or "face_kpts" in ann:
        parts = []
        for key, count in _WHOLEBODY_PARTS:
            vals = ann.get(key, [0.0] * (3 * count))
            if len(vals) != 3 * count:
                raise DatasetError(f"{where}: {key} has {len(vals)} values, expected {3 * count}")
            parts.append(np.asarray(vals, np.float64).reshape(count, 3))
        return wholebody_to_308(np.concatenate(parts)), "coco_wholebody133"
    flat = ann.get("keypoints")
    if flat is None:
        raise DatasetError(f"{where} has no 'keypoints'")
    if len(flat) == 3 * n308:
        return np.asarray(flat, np.float64).reshape(n308, 3), "keypoints308"
    if len(flat) == 3 * 133:
        return wholebody_to_308(np.asarray(flat, np.float64).reshape(133, 3)), "coco_wholebody133"
    raise DatasetError(f"{where} has {len(flat)} keypoint values; expected {3 * n308} (308 keypoints) or "
                       f"{3 * 133} (COCO-WholeBody 133), as x, y, v triplets")


def read_coco_keypoints(ann_file: str | Path, image_root: str | Path | None = None) -> CocoKeypoints:
    """Parse and validate a COCO keypoint file; image paths are relative to ``image_root`` (default: its folder)."""
    ann_file = Path(ann_file)
    root = Path(image_root) if image_root is not None else ann_file.parent
    data = read_json(ann_file, "COCO keypoint file")
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"{ann_file} is not a COCO file: it needs 'images' and 'annotations' lists")
    images: dict[int, ImageRecord] = {}
    for i, im in enumerate(data["images"]):
        missing = [k for k in ("id", "file_name", "height", "width") if k not in im]
        if missing:
            raise DatasetError(f"{ann_file}: images[{i}] lacks {', '.join(missing)}")
        if im["id"] in images:
            raise DatasetError(f"{ann_file}: duplicate image id {im['id']}")
        images[int(im["id"])] = ImageRecord(int(im["id"]), root / im["file_name"], int(im["height"]),
                                            int(im["width"]), im)
    people: list[PersonRecord] = []
    layouts = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{ann_file}: annotations[{i}] (id {ann.get('id')})"
        if ann.get("image_id") not in images:
            raise DatasetError(f"{where} refers to image id {ann.get('image_id')!r}, which is not in 'images'")
        kp, layout = _keypoints_of(ann, where)
        layouts.add(layout)
        if not np.all(np.isfinite(kp)):
            raise DatasetError(f"{where} has non-finite keypoint values")
        if np.any((kp[:, 2] < 0) | (kp[:, 2] > 2)):
            raise DatasetError(f"{where} has visibility flags outside 0, 1, 2")
        if ann.get("iscrowd", 0) or not np.any(kp[:, 2] > 0):
            continue
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
            raise DatasetError(f"{where} needs a bbox [x, y, w, h] with w, h > 0, got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        people.append(PersonRecord(int(ann.get("id", i + 1)), int(ann["image_id"]),
                                   np.array([x, y, x + w, y + h]), kp, float(ann.get("area", w * h))))
    if len(layouts) > 1:
        raise DatasetError(f"{ann_file} mixes 308-keypoint and COCO-WholeBody annotations")
    return CocoKeypoints(images, people, layouts.pop() if layouts else "keypoints308", data)
