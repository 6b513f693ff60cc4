"""Per-video state across frames: track ids for the people of each prediction, then smoothing per track.

:class:`TemporalProcessor` is fed the predictions of one video in frame order with their time stamps and returns
a :class:`FrameTracks` per frame, aligned with the prediction's people (pose order; for seg without pose, the
order of its instance masks). What it does:

- tracking (:mod:`~sapiens2.video.tracking`) of the pose boxes (with keypoints), or of the bounding boxes of the
  seg instance masks when there is no pose;
- One-Euro smoothing of each track's keypoints (:mod:`~sapiens2.video.smoothing`; needs tracking);
- exponential smoothing of the pointmap scale of the frame and of each track's depth (the median depth of the
  person's pixels: instance mask when seg ran, else the box inside the pointmap's foreground).

Raw values are kept next to the smoothed ones. Applying the smoothed scale to a metric pointmap: multiply it by
:attr:`FrameTracks.pointmap_factor` (= raw scale / smoothed scale, since metric = raw output / scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sapiens2.tasks.results import Prediction

from .smoothing import ExponentialSmoother, OneEuroFilter, SmoothingPreset, smoothing_preset
from .tracking import PoseTracker, TrackerOptions


@dataclass
class FrameTracks:
    """Tracking and smoothing of one frame (arrays aligned with the people of the prediction)."""

    time_s: float
    track_ids: np.ndarray | None = None  # (P,) int64; None without tracking
    keypoints: np.ndarray | None = None  # (P, K, 2) smoothed keypoints; None without smoothing
    scale_raw: float | None = None  # pointmap scale of this frame
    scale: float | None = None  # smoothed
    depth_raw: np.ndarray | None = None  # (P,) metres, NaN where the person has no valid depth
    depth: np.ndarray | None = None  # (P,) smoothed

    @property
    def pointmap_factor(self) -> float:
        """Multiply the frame's metric pointmap by this to get it at the smoothed scale (1 without smoothing)."""
        if self.scale_raw is None or self.scale is None or self.scale == 0:
            return 1.0
        return float(self.scale_raw / self.scale)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(P, H, W) bool -> (P, 4) xyxy bounding boxes (NaN for an empty mask)."""
    boxes = np.full((len(masks), 4), np.nan)
    for i, mask in enumerate(masks):
        rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
        if rows.any():
            r = np.flatnonzero(rows)
            c = np.flatnonzero(cols)
            boxes[i] = [c[0], r[0], c[-1], r[-1]]
    return boxes


def person_depths(prediction: Prediction, boxes: np.ndarray | None) -> np.ndarray | None:
    """Median depth (m) of each person's pixels, NaN where none is valid; None without a pointmap."""
    pm = prediction.pointmap
    if pm is None:
        return None
    depth = np.asarray(pm.pointmap[..., 2], dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    if pm.mask is not None:
        valid &= np.asarray(pm.mask, dtype=bool)
    instance = prediction.seg.instance_masks if prediction.seg is not None else None
    if instance is not None:
        regions = [np.asarray(m, dtype=bool) for m in instance]
    elif boxes is not None:
        h, w = depth.shape
        regions = []
        for x1, y1, x2, y2 in np.nan_to_num(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
            region = np.zeros((h, w), bool)
            region[max(0, int(y1)):min(h, int(np.ceil(y2)) + 1), max(0, int(x1)):min(w, int(np.ceil(x2)) + 1)] = True
            regions.append(region)
    else:
        return None
    out = np.full(len(regions), np.nan)
    for i, region in enumerate(regions):
        values = depth[region & valid]
        if values.size:
            out[i] = float(np.median(values))
    return out


class TemporalProcessor:
    """Track and smooth the predictions of one video (see the module doc).

    ``track``: give people track ids. ``smoothing``: ``"none"``, ``"light"``, ``"strong"`` or a
    :class:`SmoothingPreset`; keypoint and depth smoothing need tracking, scale smoothing does not.
    """

    def __init__(self, *, track: bool = True, smoothing: str | SmoothingPreset | None = "light",
                 tracker_options: TrackerOptions | None = None, sigmas: np.ndarray | None = None):
        self.track = bool(track)
        self.preset = smoothing_preset(smoothing)
        self.tracker = PoseTracker(tracker_options, sigmas=sigmas) if self.track else None
        self._keypoint_filters: dict[int, OneEuroFilter] = {}
        self._depth_filters: dict[int, ExponentialSmoother] = {}
        self._scale = ExponentialSmoother(self.preset.scale_tau_s) if self.preset is not None else None
        self.people_frames = 0  # sum over frames of the people found

    @property
    def total_tracks(self) -> int:
        return self.tracker.total_tracks if self.tracker is not None else 0

    def _people(self, prediction: Prediction):
        """(boxes, box scores, keypoints, keypoint scores) of the frame's people, or None when it has none."""
        pose = prediction.pose
        if pose is not None:
            return pose.boxes, pose.box_scores, pose.keypoints, pose.scores
        if prediction.seg is not None and prediction.seg.instance_masks is not None:
            return mask_boxes(prediction.seg.instance_masks), None, None, None
        return None

    def __call__(self, prediction: Prediction, time_s: float) -> FrameTracks:
        out = FrameTracks(time_s=float(time_s))
        people = self._people(prediction)
        boxes = None
        if people is not None:
            boxes, box_scores, keypoints, keypoint_scores = people
            self.people_frames += len(boxes)
            if self.tracker is not None:
                out.track_ids = self.tracker.update(boxes, box_scores, keypoints, keypoint_scores)
                for gone in self.tracker.removed:
                    self._keypoint_filters.pop(gone, None)
                    self._depth_filters.pop(gone, None)
                if self.preset is not None and keypoints is not None:
                    out.keypoints = self._smooth_keypoints(out.track_ids, boxes, keypoints, keypoint_scores, time_s)
        if prediction.pointmap is not None:
            out.scale_raw = float(prediction.pointmap.scale)
            out.scale = self._scale(out.scale_raw, time_s) if self._scale is not None else out.scale_raw
            out.depth_raw = person_depths(prediction, boxes)
            if out.depth_raw is not None:
                out.depth = out.depth_raw.copy()
                if self.preset is not None and out.track_ids is not None:
                    for i, track_id in enumerate(out.track_ids):
                        smoother = self._depth_filters.setdefault(int(track_id),
                                                                  ExponentialSmoother(self.preset.depth_tau_s))
                        value = smoother(out.depth_raw[i], time_s)
                        out.depth[i] = np.nan if value is None else value
        return out

    def _smooth_keypoints(self, track_ids, boxes, keypoints, scores, time_s) -> np.ndarray:
        preset = self.preset
        smoothed = np.array(keypoints, dtype=np.float64, copy=True)
        for i, track_id in enumerate(track_ids):
            flt = self._keypoint_filters.get(int(track_id))
            if flt is None:
                flt = self._keypoint_filters[int(track_id)] = OneEuroFilter(preset.keypoints,
                                                                            reset_after_s=preset.reset_after_s)
            height = float(boxes[i][3] - boxes[i][1]) if np.isfinite(boxes[i]).all() else 1.0
            smoothed[i] = flt(keypoints[i], time_s, update=np.asarray(scores[i]) >= preset.min_score,
                              scale=max(height, 1.0))
        return smoothed.astype(np.float32)


__all__ = ["FrameTracks", "TemporalProcessor", "mask_boxes", "person_depths"]
