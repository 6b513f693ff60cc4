"""Multi-person tracking by detection: a SORT/ByteTrack-style tracker for the people of a top-down pose pipeline.

Per frame (:meth:`PoseTracker.update`):

1. every track's :class:`~sapiens2.video.motion.BoxKalman` predicts its box one frame ahead, and its last
   keypoints are moved by the same displacement;
2. similarity of each (track, detection) pair = ``iou_weight * IoU(predicted box, box) + (1 - iou_weight) *
   OKS(moved keypoints, keypoints)`` (OKS with the 308 official sigmas; IoU alone when keypoints are missing);
3. two rounds of optimal assignment (Hungarian, :func:`~sapiens2.video.assignment.min_cost_assignment`, cost =
   1 - similarity), as in ByteTrack: first the confident detections (box score >= ``high_score``) against all
   tracks, then the remaining detections against the tracks still unmatched. A pair is only accepted with
   similarity >= ``min_similarity``;
4. matched tracks update their filter; unmatched detections start new tracks (so every person gets an id);
   tracks unmatched for more than ``max_age`` frames are dropped. A track that is unmatched for a few frames
   (occlusion, a missed detection, two people crossing) keeps predicting and is picked up again with its id.

Ids are 1, 2, 3, ... in order of appearance and never reused within one tracker.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .assignment import min_cost_assignment
from .motion import BoxKalman, xyxy_to_cxcywh
from .similarity import box_iou, keypoint_similarity

logger = logging.getLogger(__name__)

_FORBIDDEN = 1e6


@dataclass(frozen=True)
class TrackerOptions:
    """Tracker settings (see the module doc). ``max_age`` is in processed frames."""

    max_age: int = 30
    min_similarity: float = 0.1
    iou_weight: float = 0.5
    high_score: float = 0.5
    keypoint_threshold: float = 0.3

    def __post_init__(self):
        if self.max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if not 0.0 <= self.iou_weight <= 1.0:
            raise ValueError(f"iou_weight must be in [0, 1], got {self.iou_weight}")


@dataclass
class Track:
    """One person followed over frames."""

    track_id: int
    kalman: BoxKalman
    keypoints: np.ndarray | None  # (K, 2) last matched keypoints (moved with the box while unmatched)
    keypoint_scores: np.ndarray | None
    hits: int = 1
    age: int = 1  # frames since birth
    misses: int = 0  # frames since the last match
    last_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def box(self) -> np.ndarray:
        return self.kalman.box


class PoseTracker:
    """Give each detected person of each frame a stable track id (see the module doc).

    ``sigmas``: per-keypoint OKS sigmas (default: the official 308 from ``keypoint_info().sigmas``).
    """

    def __init__(self, options: TrackerOptions | None = None, *, sigmas: np.ndarray | None = None):
        self.options = options or TrackerOptions()
        self._sigmas = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
        self.tracks: list[Track] = []
        self.next_id = 1
        self.removed: list[int] = []  # ids dropped by the last update (their smoothing state can go)

    @property
    def sigmas(self) -> np.ndarray:
        if self._sigmas is None:
            from sapiens2.data.specs import keypoint_info

            self._sigmas = np.asarray(keypoint_info().sigmas, dtype=np.float64)
        return self._sigmas

    @property
    def total_tracks(self) -> int:
        """How many distinct ids were handed out."""
        return self.next_id - 1

    def _similarity(self, tracks: list[Track], boxes: np.ndarray, keypoints, keypoint_scores) -> np.ndarray:
        predicted = np.stack([t.box for t in tracks]) if tracks else np.zeros((0, 4))
        iou = box_iou(predicted, boxes)
        if keypoints is None or not tracks:
            return iou
        usable = [t for t in tracks if t.keypoints is not None]
        if not usable:
            return iou
        areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 1.0, None), axis=1)
        oks = np.zeros_like(iou)
        rows = [i for i, t in enumerate(tracks) if t.keypoints is not None]
        oks[rows] = keypoint_similarity(np.stack([tracks[i].keypoints for i in rows]),
                                        np.stack([tracks[i].keypoint_scores for i in rows]), keypoints,
                                        keypoint_scores, areas, self.sigmas, self.options.keypoint_threshold)
        weight = self.options.iou_weight
        mixed = weight * iou + (1.0 - weight) * oks
        no_points = np.array([t.keypoints is None for t in tracks])
        mixed[no_points] = iou[no_points]
        return mixed

    def _match(self, track_rows: list[int], det_cols: list[int], similarity: np.ndarray
               ) -> list[tuple[int, int]]:
        if not track_rows or not det_cols:
            return []
        sub = similarity[np.ix_(track_rows, det_cols)]
        cost = np.where(sub >= self.options.min_similarity, 1.0 - sub, _FORBIDDEN)
        return [(track_rows[r], det_cols[c]) for r, c in min_cost_assignment(cost) if cost[r, c] < _FORBIDDEN]

    def update(self, boxes: np.ndarray, box_scores: np.ndarray | None = None, keypoints: np.ndarray | None = None,
               keypoint_scores: np.ndarray | None = None) -> np.ndarray:
        """One frame's detections -> their track ids, (N,) int64 in detection order.

        ``boxes`` (N, 4) xyxy; ``box_scores`` (N,) (default 1); ``keypoints`` (N, K, 2) and ``keypoint_scores``
        (N, K) optional. Call once per processed frame, also when nothing was detected (N = 0).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        box_scores = np.ones(n) if box_scores is None else np.asarray(box_scores, dtype=np.float64).reshape(n)
        if keypoints is not None:
            keypoints = np.asarray(keypoints, dtype=np.float64)
            keypoint_scores = (np.ones(keypoints.shape[:2]) if keypoint_scores is None
                               else np.asarray(keypoint_scores, dtype=np.float64))
            if keypoints.shape[0] != n or keypoint_scores.shape != keypoints.shape[:2]:
                raise ValueError(f"keypoints {keypoints.shape} / scores {keypoint_scores.shape} do not fit "
                                 f"{n} boxes")
            # NaN keypoints would poison OKS: make them unconfident
            bad = ~np.isfinite(keypoints).all(axis=2)
            keypoint_scores = np.where(bad, 0.0, keypoint_scores)
            keypoints = np.where(bad[..., None], 0.0, keypoints)
        finite = np.isfinite(boxes).all(axis=1)
        boxes = np.where(finite[:, None], boxes, 0.0)

        for track in self.tracks:  # 1. predict
            before = track.kalman.x[:2].copy()
            track.kalman.predict()
            if track.keypoints is not None:
                track.keypoints = track.keypoints + (track.kalman.x[:2] - before)

        similarity = self._similarity(self.tracks, boxes, keypoints, keypoint_scores)  # 2.
        all_tracks = list(range(len(self.tracks)))
        confident = [j for j in range(n) if box_scores[j] >= self.options.high_score and finite[j]]
        matches = self._match(all_tracks, confident, similarity)  # 3. first round
        taken_tracks = {t for t, _ in matches}
        taken_dets = {d for _, d in matches}
        rest_tracks = [t for t in all_tracks if t not in taken_tracks]
        rest_dets = [j for j in range(n) if j not in taken_dets and finite[j]]
        matches += self._match(rest_tracks, rest_dets, similarity)  # second round

        ids = np.zeros(n, dtype=np.int64)
        matched_tracks = set()
        for t, j in matches:  # 4. update
            track = self.tracks[t]
            track.kalman.update(boxes[j])
            if keypoints is not None:
                track.keypoints, track.keypoint_scores = keypoints[j].copy(), keypoint_scores[j].copy()
            track.hits += 1
            track.misses = 0
            track.last_centre = xyxy_to_cxcywh(boxes[j])[:2]
            ids[j] = track.track_id
            matched_tracks.add(t)
        for t, track in enumerate(self.tracks):
            track.age += 1
            if t not in matched_tracks:
                track.misses += 1
        for j in range(n):
            if ids[j] == 0:
                track = Track(self.next_id, BoxKalman(boxes[j]),
                              None if keypoints is None else keypoints[j].copy(),
                              None if keypoints is None else keypoint_scores[j].copy(),
                              last_centre=xyxy_to_cxcywh(boxes[j])[:2])
                self.next_id += 1
                self.tracks.append(track)
                ids[j] = track.track_id
        self.removed = [t.track_id for t in self.tracks if t.misses > self.options.max_age]
        if self.removed:
            self.tracks = [t for t in self.tracks if t.misses <= self.options.max_age]
        return ids


__all__ = ["PoseTracker", "Track", "TrackerOptions"]
