"""Top-down pose crops for training: random flip (with left/right keypoint swap), half-body, box shift/scale/
rotation, then one UDP affine warp of the image and the keypoints into the model input.

Defaults are the official ``PoseRandomFlip`` (p 0.5), ``PoseRandomHalfBody`` (p 0.3, padding 1.5, upper body
first with p 0.7) and ``PoseRandomBBoxTransform`` (shift 0.16 of the box with p 0.3; scale 0.5–1.5 with p 1;
rotation up to 80° with p 0.6; truncated-normal draws).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ...tasks.pose.crop import BOX_PADDING, boxes_to_center_size, fix_aspect_ratio
from ...data.specs import keypoint_info

__all__ = ["PoseAugment", "topdown_matrix", "sample_pose_crop", "eval_pose_crop", "TopDownCrop"]


@dataclass(frozen=True)
class PoseAugment:
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_padding: float = 1.5
    half_body_min_total: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_upper_prob: float = 0.7
    shift_prob: float = 0.3
    shift_factor: float = 0.16
    scale_prob: float = 1.0
    scale_range: tuple[float, float] = (0.5, 1.5)
    rotate_prob: float = 0.6
    rotate_factor: float = 80.0


@dataclass
class TopDownCrop:
    image: np.ndarray  # (h, w, 3) uint8 crop
    keypoints: np.ndarray  # (K, 2) float32 in crop pixels
    visible: np.ndarray  # (K,) float32, 1 = labelled
    center: np.ndarray  # (2,) box centre in image pixels (after flip)
    size: np.ndarray  # (2,) (w, h) of the padded box
    matrix: np.ndarray  # (2, 3) image -> crop (flip included)
    flipped: bool


@lru_cache(maxsize=None)
def _body_halves() -> tuple[np.ndarray, np.ndarray]:
    types = np.asarray(keypoint_info().types)
    return types == "upper", types == "lower"


def topdown_matrix(center: np.ndarray, size: np.ndarray, input_size: tuple[int, int],
                   rotation_deg: float = 0.0) -> np.ndarray:
    """UDP warp (3x3): box centre to the crop centre, ``(input - 1) / size`` scaling, rotation about the centre.

    Without rotation this equals :func:`sapiens2.tasks.pose.crop.udp_warp_matrix`.
    """
    in_w, in_h = input_size
    sx, sy = (in_w - 1) / size[0], (in_h - 1) / size[1]
    to_origin = np.array([[1, 0, -center[0]], [0, 1, -center[1]], [0, 0, 1]], np.float64)
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), np.sin(t), 0], [-np.sin(t), np.cos(t), 0], [0, 0, 1]], np.float64)
    scale = np.diag([sx, sy, 1.0])
    to_crop = np.array([[1, 0, (in_w - 1) / 2], [0, 1, (in_h - 1) / 2], [0, 0, 1]], np.float64)
    return to_crop @ scale @ rot @ to_origin


def _truncnorm(rng: np.random.Generator, size=None) -> np.ndarray:
    """Standard normal truncated to [-1, 1] (rejection sampling)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while np.any(bad):
        out = np.where(bad, rng.standard_normal(np.shape(out)), out)
        bad = np.abs(out) > 1
    return out


def _half_body_box(rng: np.random.Generator, keypoints: np.ndarray, visible: np.ndarray, aug: PoseAugment,
                   aspect: float) -> tuple[np.ndarray, np.ndarray] | None:
    upper, lower = _body_halves()
    vis = visible > 0
    if vis.sum() < aug.half_body_min_total:
        return None
    up, low = vis & upper, vis & lower
    if up.sum() < aug.half_body_min_upper and low.sum() < aug.half_body_min_lower:
        return None
    use_upper = up.sum() >= aug.half_body_min_upper and (low.sum() < aug.half_body_min_lower
                                                          or rng.random() < aug.half_body_upper_prob)
    pts = keypoints[up if use_upper else low]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = (lo + hi) / 2
    size = fix_aspect_ratio((hi - lo) * aug.half_body_padding, aspect)
    if np.any(size <= 1):
        return None
    return center, size


def sample_pose_crop(rng: np.random.Generator, image: np.ndarray, bbox_xyxy: np.ndarray, keypoints: np.ndarray,
                     visible: np.ndarray, input_size: tuple[int, int], aug: PoseAugment,
                     padding: float = BOX_PADDING) -> TopDownCrop:
    """One randomly augmented training crop of one person. keypoints (K, 2) in image pixels, visible (K,)."""
    h, w = image.shape[:2]
    kp = np.asarray(keypoints, np.float64).copy()
    vis = np.asarray(visible, np.float32).copy()
    center, size = boxes_to_center_size(np.asarray(bbox_xyxy, np.float64)[None], padding, input_size)
    center, size = center[0], size[0]
    flip = np.eye(3)
    flipped = bool(aug.flip_prob > 0 and rng.random() < aug.flip_prob)
    if flipped:
        flip = np.array([[-1.0, 0, w - 1.0], [0, 1, 0], [0, 0, 1]])
        swap = keypoint_info().swap
        kp = kp[swap]
        kp[:, 0] = w - 1.0 - kp[:, 0]
        vis = vis[swap]
        center = np.array([w - 1.0 - center[0], center[1]])
    if aug.half_body_prob > 0 and rng.random() < aug.half_body_prob:
        half = _half_body_box(rng, kp, vis, aug, input_size[0] / input_size[1])
        if half is not None:
            center, size = half
    if aug.shift_prob > 0 and rng.random() < aug.shift_prob:
        center = center + _truncnorm(rng, 2) * aug.shift_factor * size
    if aug.scale_prob > 0 and rng.random() < aug.scale_prob:
        lo, hi = aug.scale_range
        size = size * (float(_truncnorm(rng)) * (hi - lo) / 2 + (hi + lo) / 2)
    rotation = 0.0
    if aug.rotate_prob > 0 and rng.random() < aug.rotate_prob:
        rotation = float(_truncnorm(rng)) * aug.rotate_factor
    m = topdown_matrix(center, size, input_size, rotation)
    full = m @ flip
    crop = cv2.warpAffine(image, full[:2], (int(input_size[0]), int(input_size[1])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    crop_kp = kp @ m[:2, :2].T + m[:2, 2]
    return TopDownCrop(crop, crop_kp.astype(np.float32), vis, center, size, full[:2].astype(np.float32), flipped)


def eval_pose_crop(image: np.ndarray, bbox_xyxy: np.ndarray, input_size: tuple[int, int],
                   padding: float = BOX_PADDING) -> TopDownCrop:
    """The deterministic inference crop of one box (no augmentation); keypoints are left empty."""
    center, size = boxes_to_center_size(np.asarray(bbox_xyxy, np.float64)[None], padding, input_size)
    m = topdown_matrix(center[0], size[0], input_size)
    crop = cv2.warpAffine(image, m[:2], (int(input_size[0]), int(input_size[1])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    empty = np.zeros((0, 2), np.float32)
    return TopDownCrop(crop, empty, np.zeros(0, np.float32), center[0], size[0], m[:2].astype(np.float32), False)
