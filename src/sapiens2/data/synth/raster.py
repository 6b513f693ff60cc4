"""Exact, vectorised ray casting of capsules and (optionally clipped) ellipsoids with a z-buffer.

Pixel-centre convention: integer pixel coordinates are pixel centres (OpenCV style). The pixel in column ``u`` and
row ``v`` sees the ray ``d = K^-1 [u, v, 1]`` (z component 1), so the ray parameter of a hit IS its depth and the
pointmap is exactly ``depth * K^-1 [u, v, 1]``. A mirror image maps column u to ``W - 1 - u`` and ``cx`` to
``W - 1 - cx``.

Each primitive is tested only over the pixels of its conservative screen box, all (primitive, pixel) pairs of one
kind at once; the nearest hit per pixel wins (``np.minimum.at``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ELLIPSOID, CAPSULE = 0, 1
NEAR = 0.05  # metres; primitives closer than this to the camera plane are dropped


@dataclass
class PrimitiveSet:
    """Growing list of primitives; ``person``, ``role`` and ``side`` travel with each for labelling."""
    kind: list[int] = field(default_factory=list)
    a: list[np.ndarray] = field(default_factory=list)       # capsule start / ellipsoid centre
    b: list[np.ndarray] = field(default_factory=list)       # capsule end (unused for ellipsoids)
    radius: list[float] = field(default_factory=list)       # capsule radius / bounding radius of an ellipsoid
    rot: list[np.ndarray] = field(default_factory=list)     # ellipsoid axes as columns
    radii: list[np.ndarray] = field(default_factory=list)
    clip: list[np.ndarray] = field(default_factory=list)    # (nx, ny, nz, d): keep q with n.q >= d, q normalised
    person: list[int] = field(default_factory=list)
    role: list[int] = field(default_factory=list)
    side: list[int] = field(default_factory=list)           # 0 left, 1 right, -1 none
    bone_a: list[np.ndarray] = field(default_factory=list)  # the bone a primitive dresses (labelling: fraction
    bone_b: list[np.ndarray] = field(default_factory=list)  # along it); a capsule's own axis unless given

    def add_capsule(self, a, b, r: float, person: int, role: int, side: int = -1) -> None:
        self.bone_a.append(np.asarray(a, dtype=np.float64))
        self.bone_b.append(np.asarray(b, dtype=np.float64))
        self.kind.append(CAPSULE)
        self.a.append(np.asarray(a, dtype=np.float64))
        self.b.append(np.asarray(b, dtype=np.float64))
        self.radius.append(float(r))
        self.rot.append(np.eye(3))
        self.radii.append(np.full(3, float(r)))
        self.clip.append(np.array([0.0, 0.0, 0.0, -1.0]))
        self.person.append(person)
        self.role.append(int(role))
        self.side.append(side)

    def add_ellipsoid(self, centre, rot, radii, person: int, role: int, side: int = -1, clip=None,
                      bone: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        radii = np.asarray(radii, dtype=np.float64)
        self.bone_a.append(np.asarray(centre if bone is None else bone[0], dtype=np.float64))
        self.bone_b.append(np.asarray(centre if bone is None else bone[1], dtype=np.float64))
        self.kind.append(ELLIPSOID)
        self.a.append(np.asarray(centre, dtype=np.float64))
        self.b.append(np.asarray(centre, dtype=np.float64))
        self.radius.append(float(radii.max()))
        self.rot.append(np.asarray(rot, dtype=np.float64))
        self.radii.append(radii)
        self.clip.append(np.array([0.0, 0.0, 0.0, -2.0]) if clip is None else np.asarray(clip, dtype=np.float64))
        self.person.append(person)
        self.role.append(int(role))
        self.side.append(side)

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.kind:
            raise ValueError("no primitives to render")
        return {"kind": np.array(self.kind), "a": np.stack(self.a), "b": np.stack(self.b),
                "radius": np.array(self.radius), "rot": np.stack(self.rot), "radii": np.stack(self.radii),
                "clip": np.stack(self.clip), "person": np.array(self.person), "role": np.array(self.role),
                "side": np.array(self.side), "bone_a": np.stack(self.bone_a), "bone_b": np.stack(self.bone_b)}


@dataclass
class RasterResult:
    depth: np.ndarray    # (H, W) float64, inf where nothing was hit
    prim: np.ndarray     # (H, W) int32 primitive index, -1 on background
    normal: np.ndarray   # (H, W, 3) float64 unit normals facing the camera, 0 on background
    point: np.ndarray    # (H, W, 3) float64 camera-frame XYZ, 0 on background
    prims: dict[str, np.ndarray]


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) rays K^-1 [u, v, 1] at integer pixel centres."""
    u = (np.arange(width) - K[0, 2]) / K[0, 0]
    v = (np.arange(height) - K[1, 2]) / K[1, 1]
    rays = np.empty((height, width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = 1.0
    return rays


def _screen_boxes(P: dict[str, np.ndarray], K: np.ndarray, height: int, width: int):
    """Conservative pixel boxes: the projection of the bounding cube(s) of each primitive's bounding sphere(s)."""
    r = P["radius"][:, None]
    lo_u, hi_u, lo_v, hi_v = [], [], [], []
    for c in (P["a"], P["b"]):
        zs = np.stack([c[:, 2] - r[:, 0], c[:, 2] + r[:, 0]], 1)
        zs = np.maximum(zs, NEAR)
        xs = np.stack([c[:, 0] - r[:, 0], c[:, 0] + r[:, 0]], 1)
        ys = np.stack([c[:, 1] - r[:, 0], c[:, 1] + r[:, 0]], 1)
        us = K[0, 0] * xs[:, :, None] / zs[:, None, :] + K[0, 2]
        vs = K[1, 1] * ys[:, :, None] / zs[:, None, :] + K[1, 2]
        lo_u.append(us.reshape(len(c), -1).min(1))
        hi_u.append(us.reshape(len(c), -1).max(1))
        lo_v.append(vs.reshape(len(c), -1).min(1))
        hi_v.append(vs.reshape(len(c), -1).max(1))
    u0 = np.clip(np.floor(np.minimum(*lo_u)), 0, width).astype(np.int64)
    u1 = np.clip(np.ceil(np.maximum(*hi_u)), -1, width - 1).astype(np.int64)
    v0 = np.clip(np.floor(np.minimum(*lo_v)), 0, height).astype(np.int64)
    v1 = np.clip(np.ceil(np.maximum(*hi_v)), -1, height - 1).astype(np.int64)
    behind = np.maximum(P["a"][:, 2], P["b"][:, 2]) + P["radius"] < NEAR
    w = np.where(behind, 0, np.maximum(u1 - u0 + 1, 0))
    h = np.where(behind, 0, np.maximum(v1 - v0 + 1, 0))
    return u0, v0, w, h


def _pairs(u0, v0, w, h):
    sizes = w * h
    prim = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    off = np.arange(int(sizes.sum())) - starts[prim]
    wp = w[prim]
    return prim, u0[prim] + off % wp, v0[prim] + off // wp


def _hit_ellipsoids(P, prim, d):
    """Nearest kept hit of each ray with its ellipsoid (clip plane in normalised coordinates), inf if none."""
    inv = np.transpose(P["rot"], (0, 2, 1)) / P["radii"][:, :, None]         # q = inv @ (x - c)
    o_l = -np.einsum("nij,nj->ni", inv, P["a"])[prim]
    d_l = np.einsum("nij,nj->ni", inv[prim], d)
    A = np.einsum("ni,ni->n", d_l, d_l)
    B = np.einsum("ni,ni->n", o_l, d_l)
    C = np.einsum("ni,ni->n", o_l, o_l) - 1.0
    disc = B * B - A * C
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    t0 = (-B - sq) / A
    t1 = (-B + sq) / A
    clip = P["clip"][prim]
    keep0 = np.einsum("ni,ni->n", clip[:, :3], o_l + t0[:, None] * d_l) >= clip[:, 3]
    keep1 = np.einsum("ni,ni->n", clip[:, :3], o_l + t1[:, None] * d_l) >= clip[:, 3]
    t = np.where(keep0 & (t0 > NEAR), t0, np.where(keep1 & (t1 > NEAR), t1, np.inf))
    return np.where(ok, t, np.inf)


def _sphere_t(c, r2, d):
    B = -np.einsum("ni,ni->n", d, c)
    A = np.einsum("ni,ni->n", d, d)
    C = np.einsum("ni,ni->n", c, c) - r2
    disc = B * B - A * C
    t = (-B - np.sqrt(np.maximum(disc, 0.0))) / A
    return np.where((disc >= 0) & (t > NEAR), t, np.inf)


def _hit_capsules(P, prim, d):
    a = P["a"][prim]
    b = P["b"][prim]
    r2 = P["radius"][prim] ** 2
    axis = b - a
    length = np.linalg.norm(axis, axis=1)
    w = axis / np.maximum(length, 1e-12)[:, None]
    m = -a
    dw = np.einsum("ni,ni->n", d, w)
    mw = np.einsum("ni,ni->n", m, w)
    dp = d - dw[:, None] * w
    mp = m - mw[:, None] * w
    A = np.einsum("ni,ni->n", dp, dp)
    B = np.einsum("ni,ni->n", dp, mp)
    C = np.einsum("ni,ni->n", mp, mp) - r2
    disc = B * B - A * C
    tc = (-B - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(A, 1e-18)
    s = mw + tc * dw
    t_cyl = np.where((disc >= 0) & (A > 1e-18) & (s >= 0) & (s <= length) & (tc > NEAR), tc, np.inf)
    return np.minimum(t_cyl, np.minimum(_sphere_t(a, r2, d), _sphere_t(b, r2, d)))


def raycast(prims: PrimitiveSet | dict, K: np.ndarray, height: int, width: int) -> RasterResult:
    P = prims.arrays() if isinstance(prims, PrimitiveSet) else prims
    rays = pixel_rays(K, height, width)
    u0, v0, w, h = _screen_boxes(P, K, height, width)
    prim, u, v = _pairs(u0, v0, w, h)
    pix = v * width + u
    d = rays.reshape(-1, 3)[pix]
    t = np.full(len(prim), np.inf)
    is_e = P["kind"][prim] == ELLIPSOID
    if is_e.any():
        t[is_e] = _hit_ellipsoids(P, prim[is_e], d[is_e])
    if (~is_e).any():
        t[~is_e] = _hit_capsules(P, prim[~is_e], d[~is_e])
    hit = np.isfinite(t)
    prim, pix, t = prim[hit], pix[hit], t[hit]
    zbuf = np.full(height * width, np.inf)
    np.minimum.at(zbuf, pix, t)
    win = t == zbuf[pix]
    owner = np.full(height * width, -1, dtype=np.int32)
    owner[pix[win]] = prim[win]
    fg = np.flatnonzero(owner >= 0)
    depth = zbuf
    point = np.zeros((height * width, 3))
    point[fg] = depth[fg, None] * rays.reshape(-1, 3)[fg]
    normal = np.zeros((height * width, 3))
    normal[fg] = surface_normals(P, owner[fg], point[fg])
    # Normals face the camera (the inside of a clipped shell is seen from within).
    flip = np.einsum("ni,ni->n", normal[fg], point[fg]) > 0
    normal[fg[flip]] *= -1
    return RasterResult(depth=depth.reshape(height, width), prim=owner.reshape(height, width),
                        normal=normal.reshape(height, width, 3), point=point.reshape(height, width, 3), prims=P)


def local_coords(P: dict[str, np.ndarray], prim: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Ellipsoids: the point in the primitive's axes (metres). Capsules: zeros."""
    out = np.zeros_like(point)
    is_e = P["kind"][prim] == ELLIPSOID
    pe = prim[is_e]
    out[is_e] = np.einsum("nji,nj->ni", P["rot"][pe], point[is_e] - P["a"][pe])
    return out


def bone_fraction(P: dict[str, np.ndarray], prim: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fraction in [0, 1] along the primitive's bone, bone length in metres) for surface points."""
    a = P["bone_a"][prim]
    axis = P["bone_b"][prim] - a
    length2 = np.einsum("ni,ni->n", axis, axis)
    frac = np.einsum("ni,ni->n", point - a, axis) / np.maximum(length2, 1e-18)
    return np.clip(np.where(length2 > 0, frac, 0.0), 0.0, 1.0), np.sqrt(length2)


def surface_normals(P: dict[str, np.ndarray], prim: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Analytic outward unit normals at surface points of the given primitives."""
    n = np.zeros_like(point)
    is_e = P["kind"][prim] == ELLIPSOID
    pe = prim[is_e]
    if len(pe):
        R = P["rot"][pe]
        q = np.einsum("nji,nj->ni", R, point[is_e] - P["a"][pe]) / P["radii"][pe] ** 2
        n[is_e] = np.einsum("nij,nj->ni", R, q)
    pc = prim[~is_e]
    if len(pc):
        a = P["a"][pc]
        axis = P["b"][pc] - a
        s = np.clip(np.einsum("ni,ni->n", point[~is_e] - a, axis)
                    / np.maximum(np.einsum("ni,ni->n", axis, axis), 1e-18), 0.0, 1.0)
        n[~is_e] = point[~is_e] - (a + s[:, None] * axis)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
