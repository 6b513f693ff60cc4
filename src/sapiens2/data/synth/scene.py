"""The scene around the people: pinhole camera, placement of people on a common ground, lighting and the
background picture (noise, gradients, tiled floors, clutter)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .geometry import rot_x, rot_y, rot_z

# Camera frame: x right, y down, z forward. A body that faces the camera has its left on +x, up on -y and
# forward on -z.
FACING_CAMERA = np.diag([1.0, -1.0, -1.0])


@dataclass
class Lighting:
    direction: np.ndarray  # unit vector from the surface towards the light, camera frame
    ambient: float
    colour: np.ndarray      # RGB multiplier


def sample_intrinsics(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    vfov = np.deg2rad(rng.uniform(35.0, 60.0))
    f = 0.5 * height / np.tan(0.5 * vfov)
    return np.array([[f, 0.0, (width - 1) / 2 + rng.normal(0, 0.01) * width],
                     [0.0, f, (height - 1) / 2 + rng.normal(0, 0.01) * height],
                     [0.0, 0.0, 1.0]])


def body_orientation(rng: np.random.Generator) -> np.ndarray:
    """Camera-from-body rotation: mostly upright, facing the camera more often than not."""
    yaw = rng.uniform(-65, 65) if rng.random() < 0.6 else rng.uniform(-180, 180)
    return FACING_CAMERA @ rot_y(yaw) @ rot_x(rng.normal(0, 4)) @ rot_z(rng.normal(0, 4))


def place_main(points: np.ndarray, K: np.ndarray, height: int, width: int,
               rng: np.random.Generator) -> np.ndarray:
    """Translation that frames the (already rotated) body ``points`` so it fills much of the image height."""
    lo, hi = points.min(0), points.max(0)
    extent = hi[1] - lo[1]
    fill = rng.uniform(0.55, 0.9)
    z = K[1, 1] * extent / (fill * height) + 0.5 * (hi[2] - lo[2])
    u = K[0, 2] + rng.uniform(-0.12, 0.12) * width
    v = K[1, 2] + rng.uniform(-0.06, 0.06) * height
    centre = 0.5 * (lo + hi)
    target = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
    return target - centre


def place_other(points: np.ndarray, K: np.ndarray, width: int, ground_y: float, main_z: float,
                rng: np.random.Generator) -> np.ndarray:
    """Translation of a further person: feet on the ground plane, at another depth, somewhere across the view."""
    lo, hi = points.min(0), points.max(0)
    centre = 0.5 * (lo + hi)
    z = max(main_z * rng.uniform(0.8, 2.3), 1.2 + 0.5 * (hi[2] - lo[2]))
    u = rng.uniform(-0.1, 1.1) * width
    x = (u - K[0, 2]) * z / K[0, 0]
    return np.array([x - centre[0], ground_y - hi[1], z - centre[2]])


def sample_lighting(rng: np.random.Generator) -> Lighting:
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.2), -rng.uniform(0.3, 1.2)])
    tint = np.clip(1 + rng.normal(0, 0.05, 3), 0.85, 1.15)
    return Lighting(direction=d / np.linalg.norm(d), ambient=float(rng.uniform(0.25, 0.5)), colour=tint)


def shade(albedo: np.ndarray, normal: np.ndarray, light: Lighting, exposure: float) -> np.ndarray:
    """Lambertian shading with an ambient term, (H, W, 3) float in [0, 1]."""
    lambert = np.clip(normal @ light.direction, 0.0, 1.0)
    rim = np.clip(1.0 + normal[..., 2], 0.0, 1.0) ** 3 * 0.1  # slight rim light so silhouettes separate
    light_level = light.ambient + (1.0 - light.ambient) * lambert + rim
    return np.clip(albedo * light_level[..., None] * light.colour * exposure, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    grid = rng.random((cells, max(2, cells * width // max(height, 1)))).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.05, 0.95, 3)


def background(rng: np.random.Generator, K: np.ndarray, height: int, width: int, ground_y: float) -> np.ndarray:
    """(H, W, 3) float32 background picture in [0, 1]."""
    kind = rng.choice(["noise", "gradient", "room", "clutter"], p=[0.2, 0.2, 0.35, 0.25])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "noise":
        img = np.stack([_smooth_noise(rng, height, width, int(rng.integers(3, 12))) for _ in range(3)], -1)
        img = img * rng.uniform(0.4, 1.0) + rng.uniform(0, 0.4, 3)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        img = _colour(rng)[None, None] * (1 - ramp[..., None]) + _colour(rng)[None, None] * ramp[..., None]
        if kind == "room" and ground_y > 0:
            # A tiled floor on the ground plane the people stand on, seen in perspective below the horizon.
            below = yy > K[1, 2] + 1.0
            zf = ground_y * K[1, 1] / np.maximum(yy - K[1, 2], 1e-3)
            xf = (xx - K[0, 2]) * zf / K[0, 0]
            tile = rng.uniform(0.3, 0.8)
            checker = ((np.floor(xf / tile) + np.floor(zf / tile)) % 2).astype(np.float32)
            c1, c2 = _colour(rng), _colour(rng) * 0.6
            floor = c1[None, None] * (1 - checker[..., None]) + c2[None, None] * checker[..., None]
            fade = np.clip(zf / 30.0, 0, 1)[..., None]  # far tiles alias; fade them to a flat colour
            floor = floor * (1 - fade) + 0.5 * (c1 + c2) * fade
            img = np.where(below[..., None], floor, img)
        elif kind == "clutter":
            for _ in range(int(rng.integers(4, 14))):
                c = tuple(float(v) for v in _colour(rng))
                x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
                if rng.random() < 0.5:
                    cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(5, width // 2)),
                                                  y0 + int(rng.integers(5, height // 2))), c, -1)
                else:
                    cv2.ellipse(img, (x0, y0), (int(rng.integers(3, width // 4)), int(rng.integers(3, height // 4))),
                                float(rng.uniform(0, 180)), 0, 360, c, -1)
        img = img * (0.8 + 0.4 * _smooth_noise(rng, height, width, 6)[..., None])
    sigma = rng.uniform(0.0, 2.0)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma)
    return np.clip(img, 0, 1).astype(np.float32)
