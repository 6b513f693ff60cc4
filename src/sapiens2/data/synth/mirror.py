"""Horizontal mirroring of a sample with consistent ground truth (also a training augmentation)."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..specs import keypoint_info, seg_classes


@lru_cache(maxsize=None)
def class_swap() -> np.ndarray:
    """(29,) class id of the mirror class: Left_X <-> Right_X, others unchanged."""
    names = seg_classes().names
    out = np.arange(len(names))
    for i, n in enumerate(names):
        for a, b in (("Left_", "Right_"), ("Right_", "Left_")):
            if n.startswith(a):
                out[i] = names.index(b + n[len(a):])
    return out


def mirror_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Flip a :func:`~.render.generate_sample` dict left-right.

    Column u goes to ``W - 1 - u`` (integer = pixel centre), ``cx`` to ``W - 1 - cx``, x components of normals and
    points change sign, Left_/Right_ classes swap and keypoints swap with the official ``swap`` partner.
    """
    W = sample["image"].shape[1]
    out = dict(sample)
    for key in ("image", "seg", "instance", "mask", "depth", "albedo"):
        out[key] = np.ascontiguousarray(sample[key][:, ::-1])
    out["seg"] = class_swap()[out["seg"]].astype(sample["seg"].dtype)
    for key in ("normal", "pointmap"):
        flipped = np.ascontiguousarray(sample[key][:, ::-1])
        flipped[..., 0] *= -1
        out[key] = flipped
    K = sample["K"].copy()
    K[0, 2] = W - 1 - K[0, 2]
    out["K"] = K
    kp = sample["keypoints"].copy()
    placed = kp[..., 2] > 0
    kp[..., 0] = np.where(placed, W - 1 - kp[..., 0], kp[..., 0])
    out["keypoints"] = kp[:, keypoint_info().swap]
    boxes = sample["boxes"].copy()
    boxes[:, 0] = W - 1 - boxes[:, 0] - boxes[:, 2]
    out["boxes"] = boxes
    return out
