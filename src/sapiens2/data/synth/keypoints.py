"""The 308 official keypoints for a posed body: 3D placement on the model, projection and visibility.

Every keypoint of ``sapiens2.data.specs.keypoint_info()`` is placed (left = the person's left):
body joints (shoulders, elbows, wrists, hips, knees, ankles, neck) are skeleton joint centres; feet points
(toes, heel) lie on the foot/shoe surface; hand points are the finger joints (``*_third_joint`` = base knuckle,
``2``, ``3``, ``4`` = tip; thumb base = its carpometacarpal joint); olecranon / cubital fossa / acromion lie on the
arm and shoulder surface; face, eye, brow, nose, lip and ear landmarks lie on the head, nose and ear surfaces
(:mod:`.face`). Each keypoint carries the depth it sits below the surface (0 for surface points), used by the
visibility test.

Visibility: 2 = inside the image and seen: at its pixel or one of the 8 neighbours the visible surface belongs to
one of the keypoint's own primitives (e.g. a left wrist: that person's left forearm or left hand) and is not in
front of the keypoint by more than its depth below the surface plus ``DEPTH_TOL``; 1 = placed but hidden or outside
the image; 0 = not placed (behind the camera or off the modelled face).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..specs import keypoint_info
from .appearance import Outfit
from .body import SIDES, Body, Role, foot_points, head_frame
from .face import lift_front, head_landmarks
from .geometry import MIRROR

DEPTH_TOL = 0.012  # metres
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


@lru_cache(maxsize=None)
def _name_index() -> dict[str, int]:
    return {n: i for i, n in enumerate(keypoint_info().names)}


def keypoints_3d(body: Body, outfit: Outfit) -> tuple[np.ndarray, np.ndarray]:
    """(308, 3) positions in the body's frame (NaN where not placed) and (308,) depth below the surface."""
    info = keypoint_info()
    idx = _name_index()
    n = info.num_keypoints
    pos = np.full((n, 3), np.nan)
    under = np.zeros(n)
    s, g = body.scale, body.girth

    def put(name: str, p: np.ndarray, depth: float = 0.0) -> None:
        pos[idx[name]] = p
        under[idx[name]] = depth

    joint_depth = {"shoulder": 0.06, "elbow": 0.046, "wrist": 0.036, "hip": 0.09, "knee": 0.074, "ankle": 0.05}
    for i, side in enumerate(SIDES):
        sfx, word = ("_l", "left") if i == 0 else ("_r", "right")
        for j, d in joint_depth.items():
            put(f"{word}_{j}", body.pos[j + sfx], d * s * g)
        toe_heel = foot_points(body, outfit.shoes is not None)[i]
        put(f"{word}_big_toe", toe_heel[0])
        put(f"{word}_small_toe", toe_heel[1])
        put(f"{word}_heel", toe_heel[2])
        for f, finger in enumerate(_FINGERS):
            names = [f"{word}_{finger}_third_joint", f"{word}_{finger}2", f"{word}_{finger}3", f"{word}_{finger}4"]
            for k, name in enumerate(names):
                depth = 0.014 * s if k == 0 and f > 0 else body.finger_radius[f]
                put(name, body.fingers[i, f, k], depth)
        arm_r = 0.046 * s * g
        R_upper = body.rot["shoulder" + sfx]
        put(f"{word}_olecranon", body.pos["elbow" + sfx] + R_upper @ np.array([0.0, 0.0, -arm_r]))
        put(f"{word}_cubital_fossa", body.pos["elbow" + sfx] + R_upper @ np.array([0.0, 0.0, arm_r]))
        m = MIRROR if side < 0 else np.eye(3)
        sw = body.shape.shoulder_width
        top = np.array([0.135 * sw, 0.17, -0.015]) * s + 0.056 * s * g * np.array([0.45, 0.893, 0.0])
        put(f"{word}_acromion", body.pos["spine2"] + body.rot["spine2"] @ (m @ top))
    put("neck", body.pos["neck"], 0.05 * s)
    # Face: canonical left/centre landmarks, right ones mirrored from their official swap partner.
    canon = head_landmarks(outfit.mouth_open)
    face = np.full((n, 3), np.nan)
    for name, p in canon.items():
        if name in idx:  # the charts draw whole contours; only the officially named points are kept
            face[idx[name]] = p
    missing = np.isnan(face[:, 0]) & ~np.isnan(face[info.swap, 0])
    face[missing] = face[info.swap[missing]] @ MIRROR
    # Both eyes look the same way: shift irises and pupils by the gaze, then lift them back onto the head.
    eye = np.array(["iris" in nm or "pupil" in nm or nm in ("left_eye", "right_eye") for nm in info.names])
    if np.any(outfit.gaze):
        face[eye] = lift_front(face[eye, :2] + outfit.gaze)
    centre, R, hs = head_frame(body)
    on_face = ~np.isnan(face[:, 0]) & np.isnan(pos[:, 0])
    pos[on_face] = face[on_face] * hs @ R.T + centre
    return pos, under


def _bits(*roles: Role) -> int:
    return sum(1 << int(r) for r in roles)


_FACE_ROLES = _bits(Role.HEAD, Role.NOSE, Role.HAIR, Role.HAT, Role.NECK)
_JOINT_ROLES = {
    "shoulder": _bits(Role.UPPER_ARM, Role.SHOULDERS, Role.CHEST), "elbow": _bits(Role.UPPER_ARM, Role.LOWER_ARM),
    "olecranon": _bits(Role.UPPER_ARM, Role.LOWER_ARM), "cubital_fossa": _bits(Role.UPPER_ARM, Role.LOWER_ARM),
    "acromion": _bits(Role.SHOULDERS, Role.UPPER_ARM, Role.CHEST), "wrist": _bits(Role.LOWER_ARM, Role.HAND),
    "hip": _bits(Role.THIGH, Role.PELVIS), "knee": _bits(Role.THIGH, Role.SHIN),
    "ankle": _bits(Role.SHIN, Role.FOOT), "toe": _bits(Role.FOOT), "heel": _bits(Role.FOOT),
}


@lru_cache(maxsize=None)
def owner_parts() -> tuple[np.ndarray, np.ndarray]:
    """Per keypoint: a bit mask of the primitive roles it belongs to and its side (0 left, 1 right, -1 any)."""
    roles, sides = [], []
    for name in keypoint_info().names:
        side = 0 if name.startswith(("left_", "l_")) else 1 if name.startswith(("right_", "r_")) else -1
        key = next((k for k in _JOINT_ROLES if k in name), None)
        if any(f in name for f in _FINGERS):
            roles.append(_bits(Role.HAND, Role.FINGER))
        elif name.startswith(("left_", "right_")) and key is not None:
            roles.append(_JOINT_ROLES[key])
        elif name == "neck":
            roles.append(_bits(Role.NECK, Role.SHOULDERS, Role.CHEST))
        elif name in ("left_ear", "right_ear") or (name[:2] in ("l_", "r_") and _is_ear(name)):
            roles.append(_bits(Role.EAR, Role.HEAD))
        else:
            roles.append(_FACE_ROLES | _bits(Role.EAR))
            side = -1  # face landmarks are owned by the whole head (only ears are sided primitives)
        sides.append(side)
    return np.array(roles, dtype=np.int64), np.array(sides, dtype=np.int64)


def _is_ear(name: str) -> bool:
    return any(w in name for w in ("helix", "crus", "tragus", "concha", "lobe", "antihelix", "22_15"))


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixel coordinates (integer = pixel centre) of camera-frame points."""
    z = points[:, 2:3]
    return (points[:, :2] / z) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def visibility(points: np.ndarray, under: np.ndarray, K: np.ndarray, zbuf: np.ndarray, prim: np.ndarray,
               prims: dict[str, np.ndarray], person: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) pixel coordinates and (N,) visibility in {0, 1, 2}; see the module docstring.

    ``zbuf`` (H, W) depth (inf = empty) and ``prim`` (H, W) primitive index (-1 = empty) come from the rasteriser,
    ``prims`` are its primitive arrays and ``person`` the index of the person the keypoints belong to.
    """
    H, W = zbuf.shape
    placed = ~np.isnan(points[:, 0]) & (np.nan_to_num(points[:, 2]) > 1e-3)
    xy = np.zeros((len(points), 2))
    xy[placed] = project(points[placed], K)
    vis = np.where(placed, 1, 0).astype(np.int64)
    col = np.rint(np.nan_to_num(xy[:, 0], nan=-1.0, posinf=-1.0, neginf=-1.0).clip(-2, W + 2)).astype(np.int64)
    row = np.rint(np.nan_to_num(xy[:, 1], nan=-1.0, posinf=-1.0, neginf=-1.0).clip(-2, H + 2)).astype(np.int64)
    inside = placed & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    role_bits, side = owner_parts()
    prim_role_bits = np.left_shift(1, prims["role"].astype(np.int64))
    seen = np.zeros(len(points), dtype=bool)
    limit = np.nan_to_num(points[:, 2] - under - DEPTH_TOL, nan=np.inf)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = np.clip(row + dr, 0, H - 1)
            c = np.clip(col + dc, 0, W - 1)
            owner = prim[r, c]
            o = np.maximum(owner, 0)
            own = ((owner >= 0) & (prims["person"][o] == person) & ((prim_role_bits[o] & role_bits) > 0)
                   & ((side < 0) | (prims["side"][o] == side)))
            seen |= own & (zbuf[r, c] >= limit)
    vis[inside & seen] = 2
    return xy, vis
