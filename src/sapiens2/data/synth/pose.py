"""Random but plausible poses: joint angles sampled around a few activity templates and clipped to joint limits.

Angles are Euler (rx, ry, rz) in degrees in each joint's parent frame (x = person's left, y = up, z = forward),
given for the LEFT side; the body model mirrors them for the right side. rx is flexion/extension, ry twist about the
bone, rz abduction/lateral bend.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# (min, max) degrees per joint and axis; the right side uses the same limits through mirroring.
JOINT_LIMITS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "spine1": ((-20, 40), (-25, 25), (-15, 15)),
    "spine2": ((-15, 30), (-25, 25), (-12, 12)),
    "neck": ((-25, 35), (-35, 35), (-15, 15)),
    "head": ((-25, 30), (-35, 35), (-15, 15)),
    "shoulder": ((-170, 50), (-60, 80), (0, 170)),   # rx < 0 raises the arm forward, rz > 0 raises it sideways
    "elbow": ((-150, 0), (-10, 10), (0, 0)),          # flexion brings the forearm forward
    "wrist": ((-60, 60), (-60, 60), (-25, 25)),
    "hip": ((-115, 25), (-35, 35), (-15, 45)),        # rx < 0 brings the thigh forward
    "knee": ((0, 145), (-5, 5), (0, 0)),              # flexion brings the shin backward
    "ankle": ((-35, 30), (-15, 15), (-10, 10)),
}
FINGER_CURL_LIMIT = (0.0, 100.0)
TEMPLATES = ("stand", "walk", "arms_up", "wave", "crouch", "sit", "reach", "relaxed")


@dataclass
class Pose:
    """Joint angles: ``joints[name]`` is (3,) degrees for the trunk, ``(2, 3)`` [left, right] for limbs."""
    joints: dict[str, np.ndarray] = field(default_factory=dict)
    finger_curl: np.ndarray = field(default_factory=lambda: np.zeros((2, 5, 3)))  # [side, finger, segment]
    finger_spread: np.ndarray = field(default_factory=lambda: np.zeros((2, 5)))
    template: str = "stand"


def _clip(name: str, angles: np.ndarray) -> np.ndarray:
    lim = np.asarray(JOINT_LIMITS[name], dtype=np.float64)
    return np.clip(angles, lim[:, 0], lim[:, 1])


def sample_pose(rng: np.random.Generator, template: str | None = None) -> Pose:
    """Draw one pose; ``template`` picks the activity, random when None."""
    if template is None:
        template = str(rng.choice(TEMPLATES, p=[0.2, 0.2, 0.08, 0.1, 0.1, 0.1, 0.1, 0.12]))
    if template not in TEMPLATES:
        raise ValueError(f"unknown pose template {template!r}; expected one of {TEMPLATES}")
    n = rng.normal
    u = rng.uniform
    j: dict[str, np.ndarray] = {}
    j["spine1"] = np.array([n(3, 8), n(0, 8), n(0, 4)])
    j["spine2"] = np.array([n(2, 6), n(0, 8), n(0, 4)])
    j["neck"] = np.array([n(3, 8), n(0, 12), n(0, 5)])
    j["head"] = np.array([n(0, 8), n(0, 15), n(0, 6)])
    shoulder = np.stack([[n(-10, 20), u(-20, 50), u(5, 35)] for _ in range(2)])
    elbow = np.stack([[-u(0, 60), 0, 0] for _ in range(2)])
    wrist = np.stack([[n(0, 20), n(0, 25), n(0, 10)] for _ in range(2)])
    hip = np.stack([[n(-4, 6), n(0, 8), u(0, 12)] for _ in range(2)])
    knee = np.stack([[abs(n(4, 6)), 0, 0] for _ in range(2)])
    ankle = np.stack([[n(0, 6), 0, 0] for _ in range(2)])
    if template == "walk":
        swing = u(15, 35)
        lead = 0 if rng.random() < 0.5 else 1
        hip[lead, 0] = -swing
        hip[1 - lead, 0] = swing * 0.6
        knee[lead, 0] = u(5, 25)
        knee[1 - lead, 0] = u(10, 40)
        shoulder[lead, 0] = swing * 0.8      # arms swing opposite the legs
        shoulder[1 - lead, 0] = -swing * 0.8
        elbow[:, 0] = -u(10, 40, size=2)
    elif template == "arms_up":
        shoulder[:, 2] = u(120, 170, size=2)
        shoulder[:, 0] = n(-10, 15, size=2)
        elbow[:, 0] = -u(0, 40, size=2)
    elif template == "wave":
        side = int(rng.integers(2))
        shoulder[side] = [n(-20, 15), u(0, 40), u(70, 110)]
        elbow[side, 0] = -u(70, 130)
    elif template == "crouch":
        hip[:, 0] = -u(60, 100, size=2)
        hip[:, 2] = u(5, 25, size=2)
        knee[:, 0] = u(80, 130, size=2)
        ankle[:, 0] = u(-30, -5, size=2)
        j["spine1"][0] = u(15, 35)
        shoulder[:, 0] = -u(20, 70, size=2)
        elbow[:, 0] = -u(30, 100, size=2)
    elif template == "sit":
        hip[:, 0] = -u(75, 100, size=2)
        knee[:, 0] = u(70, 100, size=2)
        shoulder[:, 0] = -u(0, 40, size=2)
        elbow[:, 0] = -u(40, 100, size=2)
    elif template == "reach":
        side = int(rng.integers(2))
        shoulder[side] = [-u(60, 150), u(-20, 30), u(5, 40)]
        elbow[side, 0] = -u(0, 40)
        j["spine2"][1] = n(0, 15)
    elif template == "relaxed":
        shoulder[:, 2] = u(3, 15, size=2)
        elbow[:, 0] = -u(0, 25, size=2)
        hip[:, 2] = u(0, 8, size=2)
    for name in ("spine1", "spine2", "neck", "head"):
        j[name] = _clip(name, j[name])
    for name, arr in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip),
                      ("knee", knee), ("ankle", ankle)):
        j[name] = _clip(name, np.asarray(arr, dtype=np.float64))
    # Hands: one grip per hand (open, relaxed, fist) with per-finger noise; distal joints follow the proximal one.
    curl = np.zeros((2, 5, 3))
    for s in range(2):
        base = [u(0, 15), u(15, 45), u(65, 95)][int(rng.choice(3, p=[0.35, 0.45, 0.2]))]
        prox = np.clip(base + n(0, 8, size=5), *FINGER_CURL_LIMIT)
        curl[s, :, 0] = prox
        curl[s, :, 1] = np.clip(prox * u(0.8, 1.2), *FINGER_CURL_LIMIT)
        curl[s, :, 2] = np.clip(prox * u(0.5, 0.9), *FINGER_CURL_LIMIT)
        curl[s, 0] *= 0.5  # the thumb bends less
    spread = np.clip(n(0, 4, size=(2, 5)) + np.array([0, 4, 0, -4, -8]) * u(0, 1.5), -15, 20)
    return Pose(joints=j, finger_curl=curl, finger_spread=spread, template=template)


def rest_pose() -> Pose:
    """Standing straight, arms hanging slightly away from the body, hands relaxed."""
    joints = {name: np.zeros(3) for name in ("spine1", "spine2", "neck", "head")}
    joints.update({name: np.zeros((2, 3)) for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")})
    joints["shoulder"][:, 2] = 12.0
    joints["elbow"][:, 0] = -10.0
    curl = np.full((2, 5, 3), 15.0)
    return Pose(joints=joints, finger_curl=curl, template="rest")
