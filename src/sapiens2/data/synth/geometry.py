"""Small rigid-geometry helpers: rotations and the left/right mirror used to build the right side from the left."""
from __future__ import annotations

import numpy as np

# Mirror across the body's sagittal plane (x = person's left). Right-side offsets are MIRROR @ left offsets and
# right-side rotations are MIRROR @ R_left @ MIRROR, so one canonical (left) description yields both sides.
MIRROR = np.diag([-1.0, 1.0, 1.0])


def rot_x(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_xyz(rx: float, ry: float, rz: float, side: int = 1) -> np.ndarray:
    """Rotation Rz @ Rx @ Ry in degrees; ``side=-1`` gives the mirror image (y and z angles negated)."""
    return rot_z(side * rz) @ rot_x(rx) @ rot_y(side * ry)


def axis_angle(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rodrigues rotation about a (not necessarily unit) axis."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    a = np.deg2rad(deg)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(a) * kx + (1.0 - np.cos(a)) * (kx @ kx)
