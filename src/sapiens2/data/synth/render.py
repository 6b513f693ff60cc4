"""One synthetic sample: people + camera + light + background -> RGB and exact ground truth for every task."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .appearance import Outfit, sample_outfit
from .body import Body, add_body_primitives, foot_points, head_frame, pose_body, sample_shape
from .face import HEAD_RADII
from .keypoints import keypoints_3d, visibility
from .parts import label_pixels
from .pose import sample_pose
from .raster import PrimitiveSet, raycast
from .scene import background, body_orientation, place_main, place_other, sample_intrinsics, sample_lighting, shade

DEFAULT_SIZE = (256, 192)  # (height, width)
MAX_PEOPLE = 4


def _extent_points(body: Body) -> np.ndarray:
    """Joints plus the head top and the soles: enough to frame a body."""
    centre, R, hs = head_frame(body)
    top = centre + R @ np.array([0.0, HEAD_RADII[1] * hs, 0.0])
    soles = foot_points(body, True)[:, 2] - 0.02 * body.scale * body.rot["root"][:, 1]
    return np.concatenate([body.points(), top[None], soles])


def generate_sample(seed: int, index: int, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1],
                    max_people: int = MAX_PEOPLE) -> dict[str, Any]:
    """The sample ``index`` of the stream ``seed`` (same arguments -> identical arrays).

    Returns numpy arrays: ``image`` (H, W, 3) uint8 RGB; ``seg`` (H, W) uint8 class ids; ``instance`` (H, W) uint8
    (0 background, k + 1 = person k); ``mask`` (H, W) uint8 {0, 1}; ``depth`` (H, W) float32 metres (0 background);
    ``pointmap``, ``normal``, ``albedo`` (H, W, 3) float32 (0 background); ``K`` (3, 3) float32; ``keypoints``
    (P, 308, 3) float32 rows (x, y, visibility); ``boxes`` (P, 4) float32 (x, y, w, h) of each person's visible
    pixels; ``person_ids`` (P,) int64 instance index of each annotated person (people with no visible pixel are
    not annotated).
    """
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    rng = np.random.default_rng([int(seed), int(index)])
    K = sample_intrinsics(rng, height, width)
    counts = np.arange(1, max_people + 1)
    weights = np.array([0.5, 0.25, 0.15, 0.1][:max_people] + [0.05] * max(0, max_people - 4))
    n_people = int(rng.choice(counts, p=weights / weights.sum()))
    bodies, outfits = [], []
    ground_y = main_z = 0.0
    for k in range(n_people):
        shape = sample_shape(rng)
        body = pose_body(shape, sample_pose(rng))
        outfit = sample_outfit(rng, shape.female)
        R = body_orientation(rng)
        pts = _extent_points(body) @ R.T
        if k == 0:
            # One image in five is an upper-body close-up (faces, hands and lips get bigger), cut by the frame.
            root_y = float(R[1] @ body.pos["root"])
            frame_pts = pts[pts[:, 1] <= root_y + 1e-9] if rng.random() < 0.2 else pts
            t = place_main(frame_pts, K, height, width, rng)
            ground_y = float((pts + t)[:, 1].max())
            main_z = float((pts + t)[:, 2].mean())
        else:
            t = place_other(pts, K, width, ground_y, main_z, rng)
        bodies.append(body.transformed(R, t))
        outfits.append(outfit)
    return render_people(bodies, outfits, K, height, width, rng, ground_y)


def render_people(bodies: list[Body], outfits: list[Outfit], K: np.ndarray, height: int, width: int,
                  rng: np.random.Generator, ground_y: float = 0.0) -> dict[str, Any]:
    """Render posed bodies (already in the camera frame) with ``K``; ``rng`` draws light, background and noise.

    Returns the dict described in :func:`generate_sample`.
    """
    if len(bodies) != len(outfits) or not bodies:
        raise ValueError("render_people needs one outfit per body and at least one body")
    prims = PrimitiveSet()
    for k, (body, outfit) in enumerate(zip(bodies, outfits)):
        add_body_primitives(body, outfit, k, prims)
    res = raycast(prims, K, height, width)
    seg, albedo = label_pixels(res, outfits)
    fg = res.prim >= 0
    light = sample_lighting(rng)
    person_rgb = shade(albedo, res.normal, light, exposure=float(rng.uniform(0.85, 1.15)))
    bg = background(rng, K, height, width, ground_y)
    rgb = np.where(fg[..., None], person_rgb, bg).astype(np.float32)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 0.55)  # soften the staircase edges of exact point sampling
    rgb += rng.normal(0.0, rng.uniform(0.003, 0.02), rgb.shape).astype(np.float32)
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    instance = np.where(fg, res.prims["person"][np.maximum(res.prim, 0)] + 1, 0).astype(np.uint8)
    zbuf = res.depth
    keypoints, boxes, ids = [], [], []
    for k, (body, outfit) in enumerate(zip(bodies, outfits)):
        rows, cols = np.nonzero(instance == k + 1)
        if len(rows) == 0:
            continue
        pos, under = keypoints_3d(body, outfit)
        xy, vis = visibility(pos, under, K, zbuf, res.prim, res.prims, k)
        keypoints.append(np.concatenate([xy, vis[:, None]], axis=1))
        boxes.append([cols.min() - 0.5, rows.min() - 0.5, cols.max() - cols.min() + 1.0, rows.max() - rows.min() + 1.0])
        ids.append(k)
    depth = np.where(fg, zbuf, 0.0)
    return {
        "image": image,
        "seg": seg,
        "instance": instance,
        "mask": fg.astype(np.uint8),
        "depth": depth.astype(np.float32),
        "pointmap": res.point.astype(np.float32),
        "normal": res.normal.astype(np.float32),
        "albedo": albedo,
        "K": K.astype(np.float32),
        "keypoints": np.asarray(keypoints, dtype=np.float32).reshape(-1, 308, 3),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "person_ids": np.asarray(ids, dtype=np.int64),
    }
