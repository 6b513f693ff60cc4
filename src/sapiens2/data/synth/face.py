"""The face: feature layout on the head (eyes, brows, nose, lips, ears), the contours that paint it and the
308-keypoint face landmarks placed on the head surface.

Coordinates are the head-centre frame of a canonical head (radii ``HEAD_RADII``; x = person's left, y = up,
z = forward), in metres; a person's head scales them by ``head_scale``. Landmarks along a contour are numbered in one
fixed direction, from the person's right to their left (image left to right on a frontal face): ``centerpoint`` at
the middle, ``midpoint_1``/``_2`` at the quarters, ``midpoint_3..6`` at the eighths; iris/pupil borders use clock
positions as seen in a frontal image (3 o'clock = the person's left). This matches the official flip pairs. Only
left-side and centre landmarks are defined here; right ones are the mirror of their official swap partner.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .geometry import rot_x

HEAD_RADII = np.array([0.076, 0.112, 0.095])
NOSE_CENTRE = np.array([0.0, -0.017, 0.084])
NOSE_RADII = np.array([0.0105, 0.026, 0.02])
NOSE_ROT = rot_x(-15.0)  # the bottom of the nose sticks out more than the root
EAR_CENTRE = np.array([0.072, -0.004, -0.008])  # left ear; the right one is mirrored
EAR_RADII = np.array([0.011, 0.031, 0.019])
EAR_ROT = np.eye(3)

EYE_X, EYE_Y = 0.031, 0.012
EYE_HALF_W, EYE_HALF_H = 0.0135, 0.0055
IRIS_R, PUPIL_R = 0.0056, 0.0023
BROW_Y, BROW_X0, BROW_X1 = 0.027, 0.011, 0.05
MOUTH_Y, MOUTH_HALF_W = -0.052, 0.024
UPPER_LIP_H, LOWER_LIP_H = 0.0065, 0.0085
GLASS_RADII = np.array([0.021, 0.0155])


# --------------------------------------------------------------------------------------------- contours
def _bump(t: np.ndarray, power: float) -> np.ndarray:
    return np.sin(np.pi * np.clip(t, 0.0, 1.0)) ** power


def mouth_contours(t: np.ndarray, gap: float) -> tuple[np.ndarray, ...]:
    """y of (upper outer, upper inner, lower inner, lower outer) lip contours at t in [0, 1] (right to left corner)."""
    t = np.asarray(t, dtype=np.float64)
    bow = 0.3 * UPPER_LIP_H * np.exp(-(((2 * t - 1) / 0.13) ** 2))
    upper_inner = MOUTH_Y + 0.5 * gap * _bump(t, 0.6)
    lower_inner = MOUTH_Y - 0.5 * gap * _bump(t, 0.6)
    upper_outer = upper_inner + UPPER_LIP_H * _bump(t, 0.55) - bow
    lower_outer = lower_inner - LOWER_LIP_H * _bump(t, 0.65)
    return upper_outer, upper_inner, lower_inner, lower_outer


def eye_lines(t: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Left-eye contours as (x, y) at t in [0, 1] from the inner (nose) end to the outer end."""
    t = np.asarray(t, dtype=np.float64)
    x = EYE_X + EYE_HALF_W * (2 * t - 1)
    up = _bump(t, 0.8) * (1 + 0.15 * (0.5 - t))
    low = _bump(t, 1.0)
    return {
        "upper_lash_line": (x, EYE_Y + EYE_HALF_H * up),
        "upper_eyelid_line": (x, EYE_Y + 0.8 * EYE_HALF_H * up),
        "upper_crease_line": (EYE_X + 1.1 * EYE_HALF_W * (2 * t - 1), EYE_Y + 0.004 + 1.15 * EYE_HALF_H * up),
        "lower_lash_line": (x, EYE_Y - 0.75 * EYE_HALF_H * low),
        "lower_eyelid_line": (x, EYE_Y - 0.6 * EYE_HALF_H * low),
    }


def brow_edges(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-brow (x, lower y, upper y) at t in [0, 1] from the inner start to the outer end."""
    t = np.asarray(t, dtype=np.float64)
    x = BROW_X0 + (BROW_X1 - BROW_X0) * t
    arch = 0.004 * np.sin(np.pi * np.clip(t * 0.85, 0, 1))
    thick = 0.0055 * (1 - 0.7 * t ** 2)
    low = BROW_Y + arch - 0.002 * t
    return x, low, low + thick


# --------------------------------------------------------------------------------------------- landmarks
_T_OF = {"centerpoint": 0.5, "midpoint_1": 0.25, "midpoint_2": 0.75, "midpoint_3": 0.125, "midpoint_4": 0.375,
         "midpoint_5": 0.625, "midpoint_6": 0.875, "inner_end": 0.0, "outer_end": 1.0}
_CLOCK = {"3": 0.0, "midpoint_1": 45.0, "12": 90.0, "midpoint_4": 135.0, "9": 180.0, "midpoint_3": 225.0,
          "6": 270.0, "midpoint_2": 315.0}
# Left ear chart (a = towards the face, b = up), in units of the ear's half depth / half height.
_EAR_CHART = {
    "top_end_of_inferior_crus": (0.05, 0.42), "top_end_of_superior_crus": (-0.12, 0.62),
    "start_of_antihelix": (-0.28, 0.42), "midpoint_1_of_antihelix": (-0.42, 0.18),
    "midpoint_2_of_antihelix": (-0.45, -0.05), "midpoint_3_of_antihelix": (-0.38, -0.25),
    "end_of_antihelix": (-0.25, -0.42), "midpoint_1_of_inferior_crus": (0.22, 0.32),
    "highest_point_of_antitragus": (-0.05, -0.45), "bottom_point_of_tragus": (0.55, -0.32),
    "protruding_point_of_tragus": (0.66, -0.15), "top_point_of_tragus": (0.55, 0.02),
    "start_point_of_crus_of_helix": (0.4, 0.18), "deepest_point_of_concha": (0.15, -0.12),
    "tip_of_ear_lobe": (-0.05, -0.9), "midpoint_between_22_15": (0.3, -0.62),
    "bottom_connecting_point_of_ear_lobe": (0.45, -0.74), "top_connecting_point_of_helix": (0.45, 0.68),
}
_HELIX_DEG = [70, 95, 120, 145, 170, 195, 215, 235]  # inner helix points 1..8 going over the top and down the back


def _front_chart() -> dict[str, tuple[float, float]]:
    """(x, y) of every left/centre landmark lifted onto the front of the head along +z."""
    pts: dict[str, tuple[float, float]] = {}
    for line in ("upper_lash_line", "upper_eyelid_line", "upper_crease_line", "lower_lash_line",
                 "lower_eyelid_line"):
        for key, t in _T_OF.items():
            x, y = eye_lines(np.array(t))[line]
            pts[f"l_{key}_of_{line}"] = (float(x), float(y))
    for ring, r in (("iris", IRIS_R), ("pupil", PUPIL_R)):
        pts[f"l_center_of_{ring}"] = (EYE_X, EYE_Y)
        for key, deg in _CLOCK.items():
            name = f"l_border_of_{ring}_{key}"
            pts[name] = (EYE_X + r * np.cos(np.deg2rad(deg)), EYE_Y + r * np.sin(np.deg2rad(deg)))
    for key, t in (("startpoint", 0.0), ("midpoint_1", 0.5), ("midpoint_2", 0.25), ("midpoint_3", 0.75)):
        x, low, up = brow_edges(np.array(t))
        pts[f"upper_{key}_of_l_eyebrow"] = (float(x), float(up))
        pts[f"lower_{key}_of_l_eyebrow"] = (float(x), float(low))
    x, low, up = brow_edges(np.array(1.0))
    pts["end_of_l_eyebrow"] = (float(x), float(0.5 * (low + up)))
    pts["center_of_glabella"] = (0.0, BROW_Y + 0.003)
    pts["center_of_nose_root"] = (0.0, EYE_Y + 0.002)
    bridge_end = -0.008
    pts["tip_of_nose_bridge"] = (0.0, bridge_end)
    for k in (1, 2, 3):
        pts[f"midpoint_{k}_of_nose_bridge"] = (0.0, EYE_Y + 0.002 + (bridge_end - EYE_Y - 0.002) * k / 4)
    pts["tip_of_nose"] = (0.0, -0.027)
    pts["bottom_center_of_nose"] = (0.0, -0.0405)
    pts["l_outer_corner_of_nose"] = (0.0165, -0.033)
    pts["inner_corner_of_l_nostril"] = (0.0035, -0.039)
    pts["outer_corner_of_l_nostril"] = (0.0115, -0.037)
    pts["upper_corner_of_l_nostril"] = (0.008, -0.034)
    pts["center_of_labiomental_groove"] = (0.0, -0.074)
    pts["tip_of_chin"] = (0.0, -0.098)
    return pts


def _mouth_chart(gap: float) -> dict[str, tuple[float, float]]:
    pts: dict[str, tuple[float, float]] = {}
    mids = {k: v for k, v in _T_OF.items() if k.startswith("midpoint")}
    for idx, contour in enumerate(("upper_outer_lip", "upper_inner_lip", "lower_inner_lip", "lower_outer_lip")):
        for key, t in mids.items():
            y = mouth_contours(np.array(t), gap)[idx]
            pts[f"{key}_of_{contour}"] = (MOUTH_HALF_W * (2 * t - 1), float(y))
    pts["center_of_cupid_bow"] = (0.0, float(mouth_contours(np.array(0.5), gap)[0]))
    pts["center_of_upper_inner_lip"] = (0.0, float(mouth_contours(np.array(0.5), gap)[1]))
    pts["center_of_lower_inner_lip"] = (0.0, float(mouth_contours(np.array(0.5), gap)[2]))
    pts["center_of_lower_outer_lip"] = (0.0, float(mouth_contours(np.array(0.5), gap)[3]))
    pts["l_outer_corner_of_mouth"] = (MOUTH_HALF_W, MOUTH_Y)
    pts["l_inner_corner_of_mouth"] = (0.9 * MOUTH_HALF_W, MOUTH_Y)
    # The inner-lip midpoints of an almost closed mouth sit on the same line; nudge to the inner x range.
    for key, t in mids.items():
        for contour in ("upper_inner_lip", "lower_inner_lip"):
            x, y = pts[f"{key}_of_{contour}"]
            pts[f"{key}_of_{contour}"] = (0.9 * x, y)
    return pts


def _ray_ellipsoid(origin: np.ndarray, direction: np.ndarray, centre: np.ndarray, rot: np.ndarray,
                   radii: np.ndarray) -> np.ndarray:
    """Entry distance along unit ``direction`` for each origin (N, 3); inf if missed."""
    inv = rot.T / radii[:, None]
    o = (origin - centre) @ inv.T
    d = direction @ inv.T
    a = np.sum(d * d, axis=-1)
    b = np.sum(o * d, axis=-1)
    c = np.sum(o * o, axis=-1) - 1.0
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where(disc >= 0, t, np.inf)


@lru_cache(maxsize=64)
def _canonical_landmarks(gap_key: int) -> dict[str, np.ndarray]:
    gap = gap_key * 1e-4
    chart = {**_front_chart(), **_mouth_chart(gap)}
    names = list(chart)
    xy = np.array([chart[n] for n in names])
    origin = np.concatenate([xy, np.full((len(xy), 1), 1.0)], axis=1)
    direction = np.array([0.0, 0.0, -1.0])
    t = np.minimum(_ray_ellipsoid(origin, direction, np.zeros(3), np.eye(3), HEAD_RADII),
                   _ray_ellipsoid(origin, direction, NOSE_CENTRE, NOSE_ROT, NOSE_RADII))
    out = {n: origin[i] + t[i] * direction for i, n in enumerate(names) if np.isfinite(t[i])}
    ab = np.array(list(_EAR_CHART.values()) + [(0.8 * np.cos(np.deg2rad(d)), 0.8 * np.sin(np.deg2rad(d)))
                                                for d in _HELIX_DEG]) * 0.92
    ear_names = [f"l_{k}" for k in _EAR_CHART] + [f"l_point_{i + 1}_of_inner_helix" for i in range(8)]
    origin = EAR_CENTRE + np.stack([np.full(len(ab), 1.0), ab[:, 1] * EAR_RADII[1], ab[:, 0] * EAR_RADII[2]], 1)
    t = _ray_ellipsoid(origin, np.array([-1.0, 0.0, 0.0]), EAR_CENTRE, EAR_ROT, EAR_RADII)
    for i, n in enumerate(ear_names):
        if np.isfinite(t[i]):
            out[n] = origin[i] + t[i] * np.array([-1.0, 0.0, 0.0])
    # COCO-style body-face points.
    out["nose"] = out["tip_of_nose"]
    out["left_eye"] = out["l_center_of_pupil"]
    out["left_ear"] = EAR_CENTRE + np.array([EAR_RADII[0], 0.0, 0.0])
    return out


def head_landmarks(mouth_open: float) -> dict[str, np.ndarray]:
    """Canonical head-centre-frame 3D position of every face/ear landmark the model defines (left + centre)."""
    return _canonical_landmarks(int(round(mouth_open * 1e4)))


def lift_front(xy: np.ndarray) -> np.ndarray:
    """Points (N, 2) of the canonical face lifted along +z onto the head or nose; NaN where neither is hit."""
    origin = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    direction = np.array([0.0, 0.0, -1.0])
    t = np.minimum(_ray_ellipsoid(origin, direction, np.zeros(3), np.eye(3), HEAD_RADII),
                   _ray_ellipsoid(origin, direction, NOSE_CENTRE, NOSE_ROT, NOSE_RADII))
    out = origin + t[:, None] * direction
    out[~np.isfinite(t)] = np.nan
    return out
