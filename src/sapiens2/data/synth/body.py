"""Articulated body model: a skeleton (forward kinematics from a :class:`Pose`) dressed in smooth primitives.

Body frame: x = the person's left, y = up, z = forward (the way the face looks); metres. Everything is described
for the left side and mirrored for the right (see :mod:`.geometry`). The model is capsules (limbs, neck, fingers)
and ellipsoids (torso, head, nose, ears, hands, feet, hair, hat); :mod:`.raster` ray-casts them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from .geometry import MIRROR, axis_angle, euler_xyz
from .face import HEAD_RADII
from .pose import Pose

if TYPE_CHECKING:
    from .appearance import Outfit
    from .raster import PrimitiveSet

SIDES = (1, -1)  # index 0 = left, 1 = right; the sign multiplies x offsets and y/z angles


class Role(IntEnum):
    """What a primitive is; :mod:`.parts` turns (role, side, local position, outfit) into a class id."""
    HEAD = 0
    NOSE = 1
    EAR = 2
    NECK = 3
    CHEST = 4
    BREAST = 5
    ABDOMEN = 6
    PELVIS = 7
    SHOULDERS = 8
    HAIR = 9
    HAIR_BACK = 10
    HAT = 11
    UPPER_ARM = 12
    LOWER_ARM = 13
    HAND = 14
    FINGER = 15
    THIGH = 16
    SHIN = 17
    FOOT = 18


@dataclass
class BodyShape:
    """Proportions: ``height`` in metres, others are multiplicative factors around 1."""
    height: float = 1.72
    girth: float = 1.0
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    head_size: float = 1.0
    arm_length: float = 1.0
    leg_length: float = 1.0
    female: bool = False


def sample_shape(rng: np.random.Generator) -> BodyShape:
    female = bool(rng.random() < 0.5)
    return BodyShape(
        height=float(rng.normal(1.64 if female else 1.76, 0.07)),
        girth=float(np.clip(rng.normal(1.0, 0.12), 0.8, 1.4)),
        shoulder_width=float(rng.uniform(0.88, 0.98) if female else rng.uniform(0.97, 1.1)),
        hip_width=float(rng.uniform(1.02, 1.15) if female else rng.uniform(0.92, 1.03)),
        head_size=float(rng.uniform(0.93, 1.07)),
        arm_length=float(rng.uniform(0.95, 1.05)),
        leg_length=float(rng.uniform(0.95, 1.06)),
        female=female,
    )


# Canonical (1.72 m) offsets of each joint in its parent's frame, left side.
_OFFSETS = {
    "spine1": np.array([0.0, 0.09, -0.01]),
    "spine2": np.array([0.0, 0.17, 0.0]),
    "neck": np.array([0.0, 0.22, -0.01]),
    "head": np.array([0.0, 0.10, 0.01]),
    "shoulder": np.array([0.175, 0.18, -0.015]),
    "elbow": np.array([0.0, -0.28, 0.0]),
    "wrist": np.array([0.0, -0.25, 0.0]),
    "hip": np.array([0.09, -0.05, 0.0]),
    "knee": np.array([0.0, -0.42, 0.0]),
    "ankle": np.array([0.0, -0.41, 0.0]),
}
HEAD_CENTRE = np.array([0.0, 0.075, 0.02])     # head-ellipsoid centre in the head joint frame
FOOT_CENTRE = np.array([0.0, -0.045, 0.055])   # foot ellipsoid in the ankle frame
FOOT_RADII = np.array([0.045, 0.035, 0.115])
PALM_CENTRE = np.array([0.0, -0.045, 0.004])   # palm in the wrist frame: fingers point down (-y), palm faces -x
PALM_RADII = np.array([0.014, 0.046, 0.041])
# Fingers (thumb, index, middle, ring, pinky): base joint in the wrist frame, segment lengths, radius.
_FINGER_BASE = np.array([[-0.006, -0.022, 0.026], [0.0, -0.088, 0.027], [0.0, -0.091, 0.009],
                         [0.0, -0.088, -0.009], [0.0, -0.081, -0.026]])
_FINGER_LEN = np.array([[0.040, 0.032, 0.027], [0.042, 0.025, 0.021], [0.046, 0.028, 0.022],
                        [0.043, 0.026, 0.021], [0.034, 0.020, 0.018]])
_FINGER_RADIUS = np.array([0.0105, 0.0088, 0.0088, 0.0083, 0.0073])
_THUMB_DIR = np.array([-0.35, -0.55, 0.76])
_THUMB_CURL_TARGET = np.array([-0.55, -0.1, -0.83])  # the thumb folds across the palm


@dataclass
class Body:
    """A posed body in some frame (the camera frame once placed): joint positions and rotations."""
    shape: BodyShape
    pos: dict[str, np.ndarray] = field(default_factory=dict)   # name or name_l / name_r -> (3,)
    rot: dict[str, np.ndarray] = field(default_factory=dict)   # same keys -> (3, 3) joint frame in that frame
    fingers: np.ndarray = field(default_factory=lambda: np.zeros((2, 5, 4, 3)))  # [side, finger, joint (base..tip)]
    finger_radius: np.ndarray = field(default_factory=lambda: np.zeros(5))
    scale: float = 1.0
    girth: float = 1.0

    def transformed(self, rot: np.ndarray, trans: np.ndarray) -> "Body":
        """The same body after x -> rot @ x + trans."""
        out = Body(shape=self.shape, finger_radius=self.finger_radius, scale=self.scale, girth=self.girth)
        out.pos = {k: rot @ v + trans for k, v in self.pos.items()}
        out.rot = {k: rot @ v for k, v in self.rot.items()}
        out.fingers = self.fingers @ rot.T + trans
        return out

    def points(self) -> np.ndarray:
        return np.concatenate([np.stack(list(self.pos.values())), self.fingers.reshape(-1, 3)])


def pose_body(shape: BodyShape, pose: Pose) -> Body:
    """Forward kinematics in the body frame (root = pelvis centre at the origin)."""
    s = shape.height / 1.72
    body = Body(shape=shape, scale=s, girth=shape.girth)
    j = pose.joints
    body.pos["root"] = np.zeros(3)
    body.rot["root"] = np.eye(3)

    def child(name: str, parent: str, offset: np.ndarray, local: np.ndarray) -> None:
        body.pos[name] = body.pos[parent] + body.rot[parent] @ offset
        body.rot[name] = body.rot[parent] @ local

    child("spine1", "root", _OFFSETS["spine1"] * s, euler_xyz(*j["spine1"]))
    child("spine2", "spine1", _OFFSETS["spine2"] * s, euler_xyz(*j["spine2"]))
    child("neck", "spine2", _OFFSETS["neck"] * s, euler_xyz(*j["neck"]))
    child("head", "neck", _OFFSETS["head"] * s, euler_xyz(*j["head"]))
    arm = s * shape.arm_length
    leg = s * shape.leg_length
    for i, side in enumerate(SIDES):
        sfx = "_l" if i == 0 else "_r"
        m = MIRROR if side < 0 else np.eye(3)
        sh = _OFFSETS["shoulder"] * s * np.array([shape.shoulder_width, 1.0, 1.0])
        child("shoulder" + sfx, "spine2", m @ sh, euler_xyz(*j["shoulder"][i], side=side))
        child("elbow" + sfx, "shoulder" + sfx, _OFFSETS["elbow"] * arm, euler_xyz(*j["elbow"][i], side=side))
        child("wrist" + sfx, "elbow" + sfx, _OFFSETS["wrist"] * arm, euler_xyz(*j["wrist"][i], side=side))
        hip = _OFFSETS["hip"] * s * np.array([shape.hip_width, 1.0, 1.0])
        child("hip" + sfx, "root", m @ hip, euler_xyz(*j["hip"][i], side=side))
        child("knee" + sfx, "hip" + sfx, _OFFSETS["knee"] * leg, euler_xyz(*j["knee"][i], side=side))
        child("ankle" + sfx, "knee" + sfx, _OFFSETS["ankle"] * leg, euler_xyz(*j["ankle"][i], side=side))
        body.fingers[i] = _finger_joints(pose, i, s) @ m.T @ body.rot["wrist" + sfx].T + body.pos["wrist" + sfx]
    body.finger_radius = _FINGER_RADIUS * s
    return body


def _finger_joints(pose: Pose, side_index: int, scale: float) -> np.ndarray:
    """(5, 4, 3) finger joints (base, 2, 3, tip) of the LEFT-canonical hand in its wrist frame."""
    out = np.zeros((5, 4, 3))
    palm_normal = np.array([-1.0, 0.0, 0.0])
    for f in range(5):
        if f == 0:
            direction = _THUMB_DIR / np.linalg.norm(_THUMB_DIR)
            target = _THUMB_CURL_TARGET
        else:
            direction = np.array([0.0, -1.0, 0.0])
            target = palm_normal
        spread_axis = palm_normal  # spreading fans the fingers within the palm plane
        direction = axis_angle(spread_axis, pose.finger_spread[side_index, f]) @ direction
        p = _FINGER_BASE[f] * scale
        out[f, 0] = p
        for k in range(3):
            curl_axis = np.cross(direction, target)
            if np.linalg.norm(curl_axis) > 1e-6:
                direction = axis_angle(curl_axis, pose.finger_curl[side_index, f, k]) @ direction
            p = p + direction * _FINGER_LEN[f, k] * scale
            out[f, k + 1] = p
    return out


def head_frame(body: Body) -> tuple[np.ndarray, np.ndarray, float]:
    """(origin, rotation, scale) of the head-centre frame in which :mod:`.face` describes the face."""
    hs = body.scale * body.shape.head_size
    R = body.rot["head"]
    return body.pos["head"] + R @ (HEAD_CENTRE * body.scale), R, hs


def add_body_primitives(body: Body, outfit: Outfit, person: int, prims: PrimitiveSet) -> None:
    """Dress the posed ``body`` in primitives (appended to ``prims``) labelled with ``person``."""
    from .face import EAR_CENTRE, EAR_RADII, EAR_ROT, NOSE_CENTRE, NOSE_RADII, NOSE_ROT

    s, g = body.scale, body.girth
    P, Rm = body.pos, body.rot
    gw = np.array([g, 1.0, g])
    sw, hw = body.shape.shoulder_width, body.shape.hip_width

    def ell(frame: str, centre, radii, role, side=-1, rot=None, clip=None):
        R = Rm[frame] if rot is None else Rm[frame] @ rot
        prims.add_ellipsoid(P[frame] + Rm[frame] @ centre, R, radii, person, role, side, clip)

    # Overlapping torso ellipsoids sized so their outlines meet without a notch (a gentle waist).
    ell("root", np.array([0.0, 0.0, -0.01]) * s, np.array([0.16 * hw, 0.13, 0.11]) * s * gw, Role.PELVIS)
    ell("spine1", np.array([0.0, 0.07, 0.0]) * s, np.array([0.14, 0.14, 0.10]) * s * gw, Role.ABDOMEN)
    ell("spine2", np.array([0.0, 0.08, -0.005]) * s, np.array([0.16 * sw, 0.16, 0.105]) * s * gw, Role.CHEST)
    if body.shape.female:
        for side in SIDES:
            ell("spine2", np.array([side * 0.065, 0.065, 0.065]) * s, np.array([0.052, 0.047, 0.042]) * s * g,
                Role.BREAST)
    prims.add_capsule(P["spine2"] + Rm["spine2"] @ (np.array([-0.135 * sw, 0.17, -0.015]) * s),
                      P["spine2"] + Rm["spine2"] @ (np.array([0.135 * sw, 0.17, -0.015]) * s),
                      0.056 * s * g, person, Role.SHOULDERS)
    prims.add_capsule(P["neck"] - Rm["neck"] @ np.array([0.0, 0.02, 0.0]) * s,
                      P["head"] + Rm["head"] @ np.array([0.0, 0.03, 0.0]) * s, 0.05 * s * min(g, 1.15),
                      person, Role.NECK)
    centre, Rh, hs = head_frame(body)
    prims.add_ellipsoid(centre, Rh, HEAD_RADII * hs, person, Role.HEAD)
    prims.add_ellipsoid(centre + Rh @ (NOSE_CENTRE * hs), Rh @ NOSE_ROT, NOSE_RADII * hs, person, Role.NOSE)
    for i, side in enumerate(SIDES):
        m = MIRROR if side < 0 else np.eye(3)
        prims.add_ellipsoid(centre + Rh @ (m @ EAR_CENTRE * hs), Rh @ m @ EAR_ROT @ m, EAR_RADII * hs, person,
                            Role.EAR, i)
    if outfit.hair_style != "bald":
        # A shell slightly larger than the head, cut by a tilted plane: the hairline is higher at the front.
        front, sides = (0.62, 0.2) if outfit.hair_style == "short" else (0.6, -0.15)
        b = front - sides
        n = np.array([0.0, 1.0, -b]) / np.hypot(1.0, b)
        clip = np.array([*n, sides / np.hypot(1.0, b)])
        prims.add_ellipsoid(centre + Rh @ (np.array([0.0, 0.006, -0.006]) * hs), Rh,
                            HEAD_RADII * np.array([1.08, 1.06, 1.08]) * hs, person, Role.HAIR, clip=clip)
        # The back of the head: the tilted cut alone would leave the nape bare.
        prims.add_ellipsoid(centre + Rh @ (np.array([0.0, -0.005, -0.03]) * hs), Rh,
                            np.array([0.079, 0.09, 0.07]) * hs, person, Role.HAIR)
        if outfit.hair_style == "long":
            prims.add_ellipsoid(centre + Rh @ (np.array([0.0, -0.085, -0.05]) * hs), Rh,
                                np.array([0.085, 0.15, 0.05]) * hs, person, Role.HAIR_BACK)
    if outfit.hat is not None:
        prims.add_ellipsoid(centre + Rh @ (np.array([0.0, 0.012, -0.004]) * hs), Rh,
                            HEAD_RADII * np.array([1.13, 1.08, 1.13]) * hs, person, Role.HAT,
                            clip=np.array([0.0, 1.0, 0.0, 0.4]))
    feet_scale = 1.13 if outfit.shoes is not None else 1.0
    for i, side in enumerate(SIDES):
        sfx = "_l" if i == 0 else "_r"
        m = MIRROR if side < 0 else np.eye(3)
        # Limbs: a capsule along the bone plus a muscle ellipsoid near its upper end, so limbs taper.
        limbs = (("shoulder", "elbow", Role.UPPER_ARM, 0.04, (0.38, 0.5, 0.052, 0.054, 0.0)),
                 ("elbow", "wrist", Role.LOWER_ARM, 0.031, (0.3, 0.45, 0.042, 0.04, 0.0)),
                 ("hip", "knee", Role.THIGH, 0.062, (0.35, 0.5, 0.083, 0.085, 0.005)),
                 ("knee", "ankle", Role.SHIN, 0.045, (0.3, 0.36, 0.052, 0.056, -0.012)))
        for top, bottom, role, radius, (at, half, rx, rz, dz) in limbs:
            a, b = P[top + sfx], P[bottom + sfx]
            if bottom == "wrist":  # stop short of the wrist so the hand joins smoothly
                b = b - Rm["wrist" + sfx] @ np.array([0.0, -0.01, 0.0]) * s
            prims.add_capsule(a, b, radius * s * g, person, role, i)
            length = float(np.linalg.norm(P[bottom + sfx] - a))
            prims.add_ellipsoid(a + Rm[top + sfx] @ np.array([0.0, -at * length, dz * s]), Rm[top + sfx],
                                np.array([rx * s * g, half * length, rz * s * g]), person, role, i,
                                bone=(a, P[bottom + sfx]))
        ell("wrist" + sfx, m @ PALM_CENTRE * s, PALM_RADII * s * np.array([g, 1, 1]), Role.HAND, i)
        for f in range(5):
            for k in range(3):
                prims.add_capsule(body.fingers[i, f, k], body.fingers[i, f, k + 1], body.finger_radius[f],
                                  person, Role.FINGER, i)
        ell("ankle" + sfx, m @ FOOT_CENTRE * s, FOOT_RADII * s * feet_scale, Role.FOOT, i)


def foot_points(body: Body, shoes: bool) -> np.ndarray:
    """(2, 3, 3) [side][big toe, small toe, heel] on the foot (or shoe) surface."""
    out = np.zeros((2, 3, 3))
    radii = FOOT_RADII * body.scale * (1.13 if shoes else 1.0)
    dirs = np.array([[-0.45, -0.25, 0.86], [0.55, -0.25, 0.8], [0.0, -0.45, -0.89]])  # left foot: -x is medial
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for i, side in enumerate(SIDES):
        sfx = "_l" if i == 0 else "_r"
        m = MIRROR if side < 0 else np.eye(3)
        local = m @ FOOT_CENTRE * body.scale + (dirs * radii) @ m.T
        out[i] = local @ body.rot["ankle" + sfx].T + body.pos["ankle" + sfx]
    return out
