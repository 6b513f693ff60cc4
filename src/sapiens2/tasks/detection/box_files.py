"""Person boxes read from files instead of a detector.

Two formats:
- COCO-style JSON: ``{"images": [{"id", "file_name"}...], "annotations": [{"image_id", "bbox": [x, y, w, h],
  "category_id", "score"?, "iscrowd"?}...], "categories": [{"id", "name"}...]}``. Only the ``person`` category is
  used (id 1 when there is no ``categories`` list); crowd regions (``iscrowd`` 1) are skipped; a missing score is 1.
  A COCO *results* list (``[{"image_id", "bbox", "score", "category_id"}...]``) is read too, keyed by image id.
- Per-image JSON (this project's format): ``{"boxes": [[x1, y1, x2, y2], [x1, y1, x2, y2, score], ...]}`` in image
  pixels, score optional (default 1); one file per image named ``<image stem>.json`` in a boxes folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sapiens2.tasks.detection.boxes import DetectionError, Detections, empty_detections

__all__ = ["read_coco_boxes", "read_boxes_json", "write_boxes_json", "BoxFileSource"]


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DetectionError(f"boxes file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectionError(f"boxes file {path} is not valid JSON: {exc}") from None


def _finite_number_rows(rows, width: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) in width for r in rows):
        raise DetectionError(f"{where}: each box must be a list of {' or '.join(map(str, width))} numbers")
    try:
        arr = [np.asarray(r, np.float64) for r in rows]
    except (TypeError, ValueError):
        raise DetectionError(f"{where}: boxes must hold numbers only") from None
    if any(not np.isfinite(a).all() for a in arr):
        raise DetectionError(f"{where}: boxes must hold finite numbers")
    return arr


def read_boxes_json(path: str | Path) -> Detections:
    """One per-image file ``{"boxes": [[x1, y1, x2, y2(, score)], ...]}`` -> Detections (score 1 when absent)."""
    data = _load_json(Path(path))
    if not isinstance(data, dict) or "boxes" not in data:
        raise DetectionError(f"{path}: expected an object with a 'boxes' list, e.g. "
                             '{"boxes": [[x1, y1, x2, y2, score]]}')
    rows = _finite_number_rows(data["boxes"], (4, 5), str(path))
    if not rows:
        return empty_detections()
    boxes = np.stack([r[:4] for r in rows]).astype(np.float32)
    scores = np.asarray([r[4] if len(r) == 5 else 1.0 for r in rows], np.float32)
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise DetectionError(f"{path}: boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return Detections(boxes, scores)


def write_boxes_json(path: str | Path, detections: Detections) -> None:
    """Write Detections in the per-image format (with scores)."""
    rows = [[*map(float, b), float(s)] for b, s in zip(detections.boxes, detections.scores)]
    Path(path).write_text(json.dumps({"boxes": rows}))


def _person_category(data: dict, path) -> int:
    cats = data.get("categories")
    if not cats:
        return 1
    ids = [c.get("id") for c in cats if isinstance(c, dict) and c.get("name") == "person"]
    if not ids:
        raise DetectionError(f"{path}: no category named 'person' in categories")
    return ids[0]


def read_coco_boxes(path: str | Path) -> dict[str | int, Detections]:
    """COCO-style file -> {file_name (or image_id for a results list): Detections of persons, xyxy}.

    Every image listed under ``images`` gets an entry, empty when it has no person annotation."""
    data = _load_json(Path(path))
    if isinstance(data, list):  # COCO results format: no images table
        anns, person, key_of = data, 1, None
    elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
        anns, person = data["annotations"], _person_category(data, path)
        images = data.get("images", [])
        if not isinstance(images, list) or not all(isinstance(i, dict) and "id" in i and "file_name" in i
                                                   for i in images):
            raise DetectionError(f"{path}: 'images' must be a list of objects with 'id' and 'file_name'")
        key_of = {i["id"]: i["file_name"] for i in images}
    else:
        raise DetectionError(f"{path}: not a COCO file (expected an object with 'annotations' or a results list)")

    grouped: dict = {k: ([], []) for k in (key_of or {}).values()}
    for n, ann in enumerate(anns):
        if not isinstance(ann, dict) or "image_id" not in ann or "bbox" not in ann:
            raise DetectionError(f"{path}: annotation {n} lacks 'image_id' or 'bbox'")
        if ann.get("category_id", person) != person or ann.get("iscrowd", 0):
            continue
        (x, y, w, h), = _finite_number_rows([ann["bbox"]], (4,), f"{path} annotation {n}")
        if w < 0 or h < 0:
            raise DetectionError(f"{path}: annotation {n} has a negative bbox size")
        if key_of is not None and ann["image_id"] not in key_of:
            raise DetectionError(f"{path}: annotation {n} refers to unknown image_id {ann['image_id']!r}")
        key = key_of[ann["image_id"]] if key_of is not None else ann["image_id"]
        boxes, scores = grouped.setdefault(key, ([], []))
        boxes.append([x, y, x + w, y + h])
        scores.append(float(ann.get("score", 1.0)))
    out = {}
    for key, (boxes, scores) in grouped.items():
        if boxes:
            s = np.asarray(scores, np.float32)
            order = np.argsort(-s, kind="stable")
            out[key] = Detections(np.asarray(boxes, np.float32)[order], s[order])
        else:
            out[key] = empty_detections()
    return out


class BoxFileSource:
    """Boxes for image files from a COCO JSON file or a folder of per-image ``<stem>.json`` files.

    ``boxes_for(image_path)`` returns Detections, or None when the source has nothing for that image (the caller
    decides: skip, detect, or use the whole image). COCO file names are matched by relative path, then by name.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self._coco = None
        elif self.path.is_file():
            self._coco = read_coco_boxes(self.path)
            self._by_name = {}
            for key, det in self._coco.items():
                self._by_name.setdefault(Path(str(key)).name, det)
        else:
            raise DetectionError(f"boxes source not found: {self.path} (give a COCO JSON file or a folder)")

    def boxes_for(self, image_path: str | Path) -> Detections | None:
        image_path = Path(image_path)
        if self._coco is None:
            candidate = self.path / f"{image_path.stem}.json"
            return read_boxes_json(candidate) if candidate.is_file() else None
        for key in (str(image_path), image_path.as_posix()):
            if key in self._coco:
                return self._coco[key]
        return self._by_name.get(image_path.name)
