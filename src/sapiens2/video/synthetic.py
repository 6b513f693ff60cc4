"""A deterministic synthetic clip for tests and benchmarks: two rendered people walking across the view in opposite
directions at different depths, so that they cross (the far one is hidden behind the near one for a few frames).

Built on :mod:`sapiens2.data.synth` (procedural bodies, exact 308 keypoints); the true keypoints of every person in
every frame are known, also while hidden.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sapiens2.data.synth.appearance import sample_outfit
from sapiens2.data.synth.body import pose_body, sample_shape
from sapiens2.data.synth.geometry import rot_y
from sapiens2.data.synth.keypoints import keypoints_3d
from sapiens2.data.synth.pose import sample_pose
from sapiens2.data.synth.render import render_people
from sapiens2.data.synth.scene import FACING_CAMERA

CAMERA_HEIGHT_M = 1.4  # the camera above the ground; the people walk on the ground plane


@dataclass
class SyntheticClip:
    """``frames`` T x (H, W, 3) uint8; ``keypoints`` (T, P, 308, 2) true pixel positions (NaN = not placed);
    ``boxes`` (T, P, 4) xyxy around each person's true keypoints (10% margin); ``visible`` (T, P) share of the
    person's keypoints seen in the rendering (0 when hidden); ``depth`` (T, P) metres of each person's pelvis."""

    frames: list[np.ndarray]
    keypoints: np.ndarray
    boxes: np.ndarray
    visible: np.ndarray
    depth: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def _project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    z = points[:, 2:3]
    uv = (points @ K.T)[:, :2] / np.where(np.abs(z) > 1e-6, z, np.nan)
    return uv


def crossing_clip(num_frames: int = 40, height: int = 96, width: int = 128, *, seed: int = 0,
                  fps: float = 30.0, paths: tuple[tuple[float, float, float], ...] = ((-1.1, 1.1, 4.0),
                                                                                     (1.3, -1.3, 5.0))
                  ) -> SyntheticClip:
    """Render the clip. ``paths``: per person (x start, x end, depth) in metres, walked at constant speed."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    rng = np.random.default_rng(seed)
    f = 0.5 * height / np.tan(np.deg2rad(25.0))
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    people = []
    for x0, x1, z in paths:
        shape = sample_shape(rng)
        body = pose_body(shape, sample_pose(rng, "walk"))
        outfit = sample_outfit(rng, shape.female)
        yaw = 35.0 if x1 > x0 else -35.0  # turned a little towards where they walk
        R = FACING_CAMERA @ rot_y(yaw)
        lowest = float((body.points() @ R.T)[:, 1].max())
        people.append((body, outfit, R, x0, x1, z, CAMERA_HEIGHT_M - lowest))
    frames, keypoints, boxes, visible, depth = [], [], [], [], []
    for t in range(num_frames):
        u = t / (num_frames - 1)
        bodies, outfits, kps, depths = [], [], [], []
        for body, outfit, R, x0, x1, z, y in people:
            placed = body.transformed(R, np.array([x0 + (x1 - x0) * u, y, z]))
            bodies.append(placed)
            outfits.append(outfit)
            kps.append(_project(keypoints_3d(placed, outfit)[0], K))
            depths.append(float(placed.pos["root"][2]))
        # the same generator state every frame: the same light and background, as from a fixed camera
        sample = render_people(bodies, outfits, K, height, width, np.random.default_rng(seed),
                               ground_y=CAMERA_HEIGHT_M)
        frames.append(sample["image"])
        kp = np.stack(kps)
        keypoints.append(kp)
        lo, hi = np.nanmin(kp, axis=1), np.nanmax(kp, axis=1)
        margin = 0.1 * (hi - lo)
        boxes.append(np.concatenate([lo - margin, hi + margin], axis=1))
        seen = np.zeros(len(people))
        for row, person in enumerate(sample["person_ids"]):
            vis = sample["keypoints"][row, :, 2]
            seen[person] = float((vis == 2).sum()) / max(float((vis > 0).sum()), 1.0)
        visible.append(seen)
        depth.append(depths)
    return SyntheticClip(frames, np.stack(keypoints).astype(np.float64), np.stack(boxes), np.stack(visible),
                         np.asarray(depth), float(fps))


__all__ = ["SyntheticClip", "crossing_clip"]
