"""Per-pixel labels: turn (primitive role, side, position on the primitive, outfit) into one of the official
29 classes and an albedo colour.

Clothing is a region rule, not extra geometry: sleeves, trouser legs and socks cover a fraction of a limb along its
axis; the top covers chest/abdomen/shoulders, the bottom the pelvis. Face features (eyes, brows, lips, teeth,
tongue, eyeglasses) are painted on the head surface from the contours of :mod:`.face`, so their depth and normals
are the head's. Every class can appear; Teeth/Tongue only when a mouth is open, Eyeglass/Apparel (hats) only on
some people, Torso only on bare-chested people.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..specs import seg_classes
from .appearance import Outfit
from .body import Role
from .face import (BROW_X0, BROW_X1, EYE_HALF_W, EYE_X, EYE_Y, GLASS_RADII, HEAD_RADII, IRIS_R,
                   MOUTH_HALF_W, PUPIL_R, brow_edges, eye_lines, mouth_contours)
from .raster import RasterResult, bone_fraction, local_coords


@lru_cache(maxsize=None)
def class_id(name: str) -> int:
    return seg_classes().index(name)


def side_class(base: str, side: np.ndarray) -> np.ndarray:
    """Left_/Right_ class ids for side 0/1."""
    return np.where(side == 0, class_id("Left_" + base), class_id("Right_" + base)).astype(np.uint8)


def _pattern(kind: np.ndarray, c1: np.ndarray, c2: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Plain / stripes / checks from two surface coordinates in metres."""
    stripe = np.sin(u * 2 * np.pi / 0.05) > 0.3
    check = (np.floor(u / 0.04) + np.floor(v / 0.04)) % 2 == 1
    use2 = np.where(kind == 1, stripe, np.where(kind == 2, check, False))
    return np.where(use2[:, None], c2, c1)


def _stack(outfits: list[Outfit], attr: str, default) -> np.ndarray:
    vals = [getattr(o, attr) for o in outfits]
    return np.array([default if v is None else v for v in vals], dtype=np.float64)


def label_pixels(res: RasterResult, outfits: list[Outfit]) -> tuple[np.ndarray, np.ndarray]:
    """(class map (H, W) uint8, albedo (H, W, 3) float32 in [0, 1]); background is class 0 with albedo 0."""
    H, W = res.prim.shape
    P = res.prims
    owner = res.prim.reshape(-1)
    fg = np.flatnonzero(owner >= 0)
    prim = owner[fg]
    pts = res.point.reshape(-1, 3)[fg]
    role, side, person = P["role"][prim], P["side"][prim], P["person"][prim]
    loc = local_coords(P, prim, pts)
    frac, length = bone_fraction(P, prim, pts)
    # Per-person outfit fields gathered to pixels.
    skin = _stack(outfits, "skin", 0)[person]
    hair = _stack(outfits, "hair", 0)[person]
    top_on = np.array([o.top is not None for o in outfits])[person]
    top = _stack(outfits, "top", [0, 0, 0])[person]
    pat_id = {"plain": 0, "stripes": 1, "checks": 2}
    top_pat = np.array([pat_id[o.top_pattern] for o in outfits])[person]
    bot_pat = np.array([pat_id[o.bottom_pattern] for o in outfits])[person]
    sleeve = _stack(outfits, "sleeve", 0)[person]
    leg = _stack(outfits, "leg_cover", 0)[person]
    socks_on = np.array([o.socks is not None for o in outfits])[person]
    shoes_on = np.array([o.shoes is not None for o in outfits])[person]
    long_top = np.array([o.long_top for o in outfits])[person]
    scale = np.array([P["radius"][(P["person"] == k) & (P["role"] == Role.HEAD)].max() / HEAD_RADII[1]
                      if np.any((P["person"] == k) & (P["role"] == Role.HEAD)) else 1.0
                      for k in range(len(outfits))])[person]

    cls = np.full(len(fg), class_id("Face_Neck"), dtype=np.uint8)
    alb = skin.copy()
    top_alb = _pattern(top_pat, top, _stack(outfits, "top2", 0)[person], loc[:, 1] + frac * length,
                       loc[:, 0] + loc[:, 2])
    bot_alb = _pattern(bot_pat, _stack(outfits, "bottom", 0)[person], _stack(outfits, "bottom2", 0)[person],
                       loc[:, 1] + frac * length, loc[:, 0] + loc[:, 2])

    def put(mask: np.ndarray, class_ids, colour: np.ndarray) -> None:
        cls[mask] = class_ids[mask] if isinstance(class_ids, np.ndarray) else class_ids
        alb[mask] = colour[mask]

    hairy = (role == Role.HAIR) | (role == Role.HAIR_BACK)
    put(hairy, class_id("Hair"), hair)
    put(role == Role.HAT, class_id("Apparel"), _stack(outfits, "hat", [0, 0, 0])[person])
    trunk = np.isin(role, [Role.CHEST, Role.BREAST, Role.ABDOMEN, Role.SHOULDERS])
    waist = np.where(long_top, -0.03, 0.05) * scale
    trunk |= (role == Role.PELVIS) & (loc[:, 1] > waist)
    put(trunk & top_on, class_id("Upper_Clothing"), top_alb)
    put(trunk & ~top_on, class_id("Torso"), skin)
    put((role == Role.PELVIS) & (loc[:, 1] <= waist), class_id("Lower_Clothing"), bot_alb)
    limb = role == Role.UPPER_ARM
    put(limb & (frac < sleeve), class_id("Upper_Clothing"), top_alb)
    put(limb & (frac >= sleeve), side_class("Upper_Arm", side), skin)
    limb = role == Role.LOWER_ARM
    put(limb & (frac < sleeve - 1), class_id("Upper_Clothing"), top_alb)
    put(limb & (frac >= sleeve - 1), side_class("Lower_Arm", side), skin)
    put((role == Role.HAND) | (role == Role.FINGER), side_class("Hand", side), skin)
    limb = role == Role.THIGH
    put(limb & (frac < leg), class_id("Lower_Clothing"), bot_alb)
    put(limb & (frac >= leg), side_class("Upper_Leg", side), skin)
    limb = role == Role.SHIN
    sock_top = _stack(outfits, "sock_top", 1)[person]
    socks = _stack(outfits, "socks", [0, 0, 0])[person]
    put(limb & (frac < leg - 1), class_id("Lower_Clothing"), bot_alb)
    put(limb & (frac >= leg - 1) & socks_on & (frac > sock_top), side_class("Sock", side), socks)
    put(limb & (frac >= leg - 1) & ~(socks_on & (frac > sock_top)), side_class("Lower_Leg", side), skin)
    foot = role == Role.FOOT
    put(foot & shoes_on, side_class("Shoe", side), _stack(outfits, "shoes", [0, 0, 0])[person])
    put(foot & ~shoes_on & socks_on, side_class("Sock", side), socks)
    put(foot & ~shoes_on & ~socks_on, side_class("Foot", side), skin)
    head = np.flatnonzero(role == Role.HEAD)
    if len(head):
        _paint_face(loc[head] / scale[head, None], person[head], outfits, cls, alb, head)
    classes = np.zeros(H * W, dtype=np.uint8)
    classes[fg] = cls
    albedo = np.zeros((H * W, 3), dtype=np.float32)
    albedo[fg] = np.clip(alb, 0, 1)
    return classes.reshape(H, W), albedo.reshape(H, W, 3)


def _paint_face(c: np.ndarray, person: np.ndarray, outfits: list[Outfit], cls: np.ndarray, alb: np.ndarray,
                idx: np.ndarray) -> None:
    """Paint eyes, brows, lips/teeth/tongue and eyeglasses onto head pixels ``idx`` (canonical coords ``c``)."""
    x, y, z = c[:, 0], c[:, 1], c[:, 2]
    front = z > 0.3 * HEAD_RADII[2]
    ax = np.abs(x)  # both eyes/brows painted with the left-eye contours (mirror symmetric)
    hair = np.array([o.hair for o in outfits])[person]
    # Brows.
    tb = (ax - BROW_X0) / (BROW_X1 - BROW_X0)
    _, lo, up = brow_edges(tb)
    brow = front & (tb >= 0) & (tb <= 1) & (y >= lo) & (y <= up)
    alb[idx[brow]] = hair[brow] * 0.8 + 0.02
    # Eyes: sclera inside the lash lines, iris and pupil at the gaze point.
    te = (ax - (EYE_X - EYE_HALF_W)) / (2 * EYE_HALF_W)
    lines = eye_lines(te)
    inside = (te >= 0) & (te <= 1) & (y <= lines["upper_lash_line"][1]) & (y >= lines["lower_lash_line"][1])
    eye = front & inside
    gaze = np.array([o.gaze for o in outfits])[person]
    ex = np.sign(x) * EYE_X + gaze[:, 0]
    r = np.hypot(x - ex, y - (EYE_Y + gaze[:, 1]))
    iris = np.array([o.iris for o in outfits])[person]
    colour = np.where((r < PUPIL_R)[:, None], 0.03, np.where((r < IRIS_R)[:, None], iris, 0.9))
    alb[idx[eye]] = colour[eye]
    lash = front & (te >= 0) & (te <= 1) & (np.abs(y - lines["upper_lash_line"][1]) < 0.0009)
    alb[idx[lash]] = 0.05
    # Lips, teeth, tongue.
    gap = np.array([o.mouth_open for o in outfits])[person]
    tm = (x / MOUTH_HALF_W + 1) / 2
    uo, ui, li, lo_ = mouth_contours(tm, 0.0)
    # mouth_contours takes a scalar gap; rebuild the open-mouth contours per pixel.
    half = 0.5 * gap * np.sin(np.pi * np.clip(tm, 0, 1)) ** 0.6
    ui, li = ui + half, li - half
    uo, lo_ = uo + half, lo_ - half
    mouth = front & (tm >= 0) & (tm <= 1)
    lips = np.array([o.lips for o in outfits])[person]
    upper = mouth & (y <= uo) & (y > ui)
    lower = mouth & (y >= lo_) & (y < li)
    cls[idx[upper]] = class_id("Upper_Lip")
    cls[idx[lower]] = class_id("Lower_Lip")
    alb[idx[upper | lower]] = lips[upper | lower]
    opening = mouth & (y <= ui) & (y >= li) & (gap > 0)
    depth = np.where(ui - li > 0, (ui - y) / np.maximum(ui - li, 1e-9), 0)
    up_teeth = opening & (depth < 0.35)
    low_teeth = opening & (depth > 0.8)
    tongue = opening & ~up_teeth & ~low_teeth
    cls[idx[up_teeth]] = class_id("Upper_Teeth")
    cls[idx[low_teeth]] = class_id("Lower_Teeth")
    cls[idx[tongue]] = class_id("Tongue")
    alb[idx[up_teeth | low_teeth]] = 0.88
    alb[idx[tongue]] = np.array([0.55, 0.18, 0.2])
    # Eyeglasses: lenses and frame rings in front, a bridge and temples along the sides.
    frame = np.array([o.glasses if o.glasses is not None else np.zeros(3) for o in outfits])[person]
    worn = np.array([o.glasses is not None for o in outfits])[person]
    e = ((ax - EYE_X) / GLASS_RADII[0]) ** 2 + ((y - EYE_Y) / GLASS_RADII[1]) ** 2
    lens = worn & front & (e <= 1.0)
    ring = worn & front & (e > 1.0) & (e <= 1.3)
    bar_y = EYE_Y + 0.005
    bridge = worn & front & (ax < EYE_X - GLASS_RADII[0] + 0.001) & (np.abs(y - bar_y) < 0.0016)
    temple = worn & (ax > EYE_X + GLASS_RADII[0]) & (z > -0.06) & (np.abs(y - bar_y) < 0.0016) & ~(e <= 1.3)
    glass = lens | ring | bridge | temple
    cls[idx[glass]] = class_id("Eyeglass")
    alb[idx[lens]] = alb[idx[lens]] * 0.75 + 0.15
    alb[idx[ring | bridge | temple]] = frame[ring | bridge | temple]
