"""Stage 2 (actor, loads the detector once): person boxes and the paper's size rule.

Detectors: ``hog`` = the project's shipped no-download HOG detector (``sapiens2 predict --detector hog``),
``onnx`` = ``OnnxPersonDetector`` on a user .onnx (YOLOv8 / RTMDet), ``annotations`` = the boxes of the image's
sidecar JSON (for collections that come with boxes). Boxes are found on the working-size image and mapped back to
original pixels. Drop: ``no_person`` when none is found, ``person_too_small`` when no box has a short side of at
least ``min_box_short_side`` (multi-person images are kept).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from .columns import is_dropped, map_rows
from .config import CurateConfig, CurationConfigError, PersonConfig

__all__ = ["build_detector", "AnnotationBoxes", "person_reason", "PersonStage"]


class AnnotationBoxes:
    """Boxes from the sidecar annotation (``boxes``: x1, y1, x2, y2 in original pixels; optional ``scores``)."""

    def boxes(self, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        ann = json.loads(row["annotation"]) if row["annotation"] else {}
        boxes = np.asarray(ann.get("boxes", []), np.float32).reshape(-1, 4)
        scores = np.asarray(ann.get("scores", [1.0] * len(boxes)), np.float32).reshape(-1)
        return boxes, scores


def build_detector(cfg: PersonConfig):
    if cfg.detector == "hog":
        from sapiens2.tasks.detection import HogPersonDetector

        return HogPersonDetector(score_threshold=cfg.score_threshold, max_side=cfg.hog_max_side)
    if cfg.detector == "onnx":
        from sapiens2.tasks.detection import OnnxPersonDetector

        if not cfg.model_path:
            raise CurationConfigError("person.detector 'onnx' needs person.model_path (an .onnx file)")
        return OnnxPersonDetector(cfg.model_path, score_threshold=cfg.score_threshold)
    if cfg.detector == "annotations":
        return AnnotationBoxes()
    raise CurationConfigError(f"person.detector must be hog, onnx or annotations, got {cfg.detector!r}")


def person_reason(boxes: np.ndarray, min_short_side: float) -> str:
    if len(boxes) == 0:
        return "no_person"
    short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return "" if short.max() >= min_short_side else "person_too_small"


class PersonStage:
    """Ray Data callable class: one detector per actor."""

    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg
        self.detector = build_detector(cfg.person)

    def _detect(self, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.detector, AnnotationBoxes):
            return self.detector.boxes(row)
        found = self.detector.detect(np.ascontiguousarray(row["image"]))
        return found.boxes / np.float32(row["scale"]), found.scores

    def _row(self, row: dict[str, Any]) -> None:
        if is_dropped(row) and not (self.cfg.score_all and row["width"] > 0):
            return
        boxes, scores = self._detect(row)
        short = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
        row["num_persons"] = int(len(boxes))
        row["max_person_short_side"] = float(short.max()) if len(boxes) else 0.0
        row["person_score"] = float(scores.max()) if len(scores) else 0.0
        row["persons"] = json.dumps([{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4)}
                                     for b, s in zip(boxes, scores)])
        if not is_dropped(row):
            row["drop_reason"] = person_reason(boxes, self.cfg.person.min_box_short_side)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_rows(batch, self._row)
