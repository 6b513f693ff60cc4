"""Stage 3 (actor): is a head visible on a prominent person, and which way does it face (yaw, pitch in degrees).

Two estimators, documented because neither is a trained head-pose network:

``keypoints`` -- from the 308-point layout's face points (nose, eyes, ears) given by the sidecar annotation or a
pose model. A head is visible when any of the five scores >= ``min_keypoint_score``. Angles come from a rigid head
model (orthographic camera): eyes at +-30 deg azimuth on a sphere of radius R (so R = the interocular distance,
~6.3 cm), nose tip at 1.2 R from the centre and 0.7 R below the eye line (~4.5 cm, adult average). Then
(nose - eye midpoint)_x / eye distance = 0.334 tan(yaw) and the nose's drop below the eye line in units of R
(R = eye distance / cos yaw) = 0.7 cos(pitch) - 0.334 sin(pitch). Yaw > 0: the nose points to
the image right; pitch > 0: looking up. One ear and no second eye = profile (+-90). Accuracy is coarse (~15 deg):
enough to balance on, not to measure with.

``cascade`` -- OpenCV's bundled Haar cascades (frontal and profile face, the profile also on the mirrored crop) in
the top 40 % of each prominent person box: frontal = yaw 0, profile = +-70, pitch unknown (NaN). It misses small and
back-facing heads; use it only when no keypoints exist.

Prominent person = box area >= ``prominent_fraction`` x the largest box. Drop ``no_head`` when ``require_head`` and no
prominent person shows a head.
"""
from __future__ import annotations

import json
import math
from typing import Any

import cv2
import numpy as np

from .columns import is_dropped, map_rows
from .config import CurateConfig, CurationConfigError, HeadPoseConfig

__all__ = ["head_pose_from_face_points", "CascadeHeadFinder", "HeadPoseStage", "FACE_POINTS"]

FACE_POINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")  # indices 0-4 of the 308 layout
_EYE_AZIMUTH = math.radians(30.0)
_NOSE_DEPTH, _NOSE_DROP = 1.2, 0.7
_YAW_GAIN = _NOSE_DEPTH - math.cos(_EYE_AZIMUTH)  # 0.334


def head_pose_from_face_points(points: np.ndarray, min_score: float) -> tuple[bool, float, float]:
    """(visible, yaw, pitch) from (5, 3) rows x, y, score in FACE_POINTS order; NaN angles when not estimable."""
    p = np.asarray(points, np.float64).reshape(5, 3)
    vis = p[:, 2] >= min_score
    if not vis.any():
        return False, math.nan, math.nan
    nose, leye, reye, lear, rear = p
    if vis[1] and vis[2] and vis[0]:
        mid = (leye[:2] + reye[:2]) / 2
        eye_dist = float(np.hypot(*(leye[:2] - reye[:2])))
        if eye_dist < 1e-6:
            return True, math.nan, math.nan
        yaw = math.atan((nose[0] - mid[0]) / eye_dist / _YAW_GAIN)
        radius = eye_dist / max(math.cos(yaw), 0.2) / (2 * math.sin(_EYE_AZIMUTH))
        v = (nose[1] - mid[1]) / radius
        amp, phase = math.hypot(_NOSE_DROP, _YAW_GAIN), math.atan2(_YAW_GAIN, _NOSE_DROP)
        pitch = math.acos(max(-1.0, min(1.0, v / amp))) - phase
        return True, math.degrees(yaw), math.degrees(pitch)
    if vis[0] and (vis[3] != vis[4]):  # one ear and the nose: a profile; the nose lies on the facing side
        ear = lear if vis[3] else rear
        return True, 90.0 if nose[0] > ear[0] else -90.0, math.nan
    return True, math.nan, math.nan


class CascadeHeadFinder:
    """Face presence and a coarse yaw from OpenCV's bundled Haar cascades."""

    def __init__(self):
        root = cv2.data.haarcascades
        self.frontal = cv2.CascadeClassifier(root + "haarcascade_frontalface_default.xml")
        self.profile = cv2.CascadeClassifier(root + "haarcascade_profileface.xml")
        if self.frontal.empty() or self.profile.empty():
            raise CurationConfigError(f"OpenCV's Haar cascades are missing under {root}")

    def find(self, gray: np.ndarray, box: np.ndarray) -> tuple[bool, float]:
        x1, y1, x2, y2 = box
        bw, bh = x2 - x1, y2 - y1
        xa, xb = int(max(0, x1 - 0.1 * bw)), int(min(gray.shape[1], x2 + 0.1 * bw))
        ya, yb = int(max(0, y1 - 0.05 * bh)), int(min(gray.shape[0], y1 + 0.4 * bh))
        crop = gray[ya:yb, xa:xb]
        if crop.shape[0] < 24 or crop.shape[1] < 24:
            return False, math.nan
        min_size = (max(20, int(0.12 * bw)),) * 2
        if len(self.frontal.detectMultiScale(crop, 1.1, 4, minSize=min_size)):
            return True, 0.0
        if len(self.profile.detectMultiScale(crop, 1.1, 4, minSize=min_size)):
            return True, -70.0  # the cascade is trained on faces looking to the image left
        if len(self.profile.detectMultiScale(np.ascontiguousarray(crop[:, ::-1]), 1.1, 4, minSize=min_size)):
            return True, 70.0
        return False, math.nan


def _prominent(boxes: np.ndarray, fraction: float) -> np.ndarray:
    if len(boxes) == 0:
        return boxes
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[area >= fraction * area.max()]


class HeadPoseStage:
    def __init__(self, cfg: CurateConfig):
        self.cfg: HeadPoseConfig = cfg.head
        self.score_all = cfg.score_all
        if self.cfg.method not in ("auto", "keypoints", "cascade", "none"):
            raise CurationConfigError(f"head.method must be auto, keypoints, cascade or none, got {self.cfg.method!r}")
        self.cascade = CascadeHeadFinder() if self.cfg.method in ("auto", "cascade") else None

    def _from_keypoints(self, row, persons, boxes):
        ann = json.loads(row["annotation"]) if row["annotation"] else {}
        kpts = np.asarray(ann.get("keypoints", []), np.float64)
        if kpts.size == 0:
            return None
        kpts = kpts.reshape(len(kpts), -1, 3)
        prominent = _prominent(boxes, self.cfg.prominent_fraction)
        best = (False, math.nan, math.nan)
        for person in kpts:
            visible, yaw, pitch = head_pose_from_face_points(person[:5], self.cfg.min_keypoint_score)
            anchor = person[:5][person[:5, 2] >= self.cfg.min_keypoint_score, :2]
            if not visible:
                continue
            cx, cy = anchor.mean(axis=0)
            inside = [i for i, b in enumerate(boxes) if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
            for i in inside:
                persons[i].update(yaw=None if math.isnan(yaw) else round(yaw, 2),
                                  pitch=None if math.isnan(pitch) else round(pitch, 2), head=True)
            if any(np.allclose(boxes[i], p) for i in inside for p in prominent) and not best[0]:
                best = (True, yaw, pitch)
        return best

    def _from_cascade(self, row, persons, boxes):
        gray = cv2.cvtColor(np.ascontiguousarray(row["image"]), cv2.COLOR_RGB2GRAY)
        prominent = _prominent(boxes, self.cfg.prominent_fraction)
        best = (False, math.nan, math.nan)
        for i, box in enumerate(boxes):
            if not any(np.allclose(box, p) for p in prominent):
                continue
            found, yaw = self.cascade.find(gray, box * row["scale"])
            if found:
                persons[i].update(yaw=None if math.isnan(yaw) else yaw, pitch=None, head=True)
                if not best[0]:
                    best = (True, yaw, math.nan)
        return best

    def _row(self, row: dict[str, Any]) -> None:
        if self.cfg.method == "none" or row["num_persons"] < 0 or (is_dropped(row) and not self.score_all):
            return
        persons = json.loads(row["persons"])
        boxes = np.asarray([p["box"] for p in persons], np.float64).reshape(-1, 4)
        result = None
        if self.cfg.method in ("auto", "keypoints"):
            result = self._from_keypoints(row, persons, boxes)
            method = "keypoints"
        if result is None and self.cfg.method in ("auto", "cascade"):
            result, method = self._from_cascade(row, persons, boxes), "cascade"
        if result is None:
            result, method = (False, math.nan, math.nan), "keypoints"
        visible, yaw, pitch = result
        row.update(head_visible=int(visible), head_yaw=yaw, head_pitch=pitch, head_method=method,
                   persons=json.dumps(persons))
        if not is_dropped(row) and self.cfg.require_head and not visible:
            row["drop_reason"] = "no_head"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return map_rows(batch, self._row)
