"""The official dataset metadata: 308 keypoints and 29 body-part classes, shipped as package data."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class KeypointInfo:
    names: tuple[str, ...]
    colors: np.ndarray  # (308, 3) uint8 RGB
    types: tuple[str, ...]
    swap: np.ndarray  # (308,) index of the left/right partner, itself where there is none
    skeleton: tuple[tuple[int, int], ...]
    skeleton_colors: np.ndarray  # (links, 3) uint8 RGB
    joint_weights: np.ndarray  # (308,) float32
    sigmas: np.ndarray  # (308,) float32, OKS sigmas

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass(frozen=True)
class SegClasses:
    names: tuple[str, ...]
    palette: np.ndarray  # (29, 3) uint8 RGB, row = class id

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)


def _read_json(name: str) -> dict:
    return json.loads(resources.files("sapiens2.data").joinpath(name).read_text())


@lru_cache(maxsize=None)
def keypoint_info() -> KeypointInfo:
    d = _read_json("keypoints308.json")
    n = len(d["names"])
    swap = np.array([i if s < 0 else s for i, s in enumerate(d["swap"])], dtype=np.int64)
    assert swap.shape == (n,)
    return KeypointInfo(
        names=tuple(d["names"]),
        colors=np.asarray(d["colors"], dtype=np.uint8),
        types=tuple(d["types"]),
        swap=swap,
        skeleton=tuple(tuple(s["link"]) for s in d["skeleton"]),
        skeleton_colors=np.asarray([s["color"] for s in d["skeleton"]], dtype=np.uint8),
        joint_weights=np.asarray(d["joint_weights"], dtype=np.float32),
        sigmas=np.asarray(d["sigmas"], dtype=np.float32),
    )


@lru_cache(maxsize=None)
def seg_classes() -> SegClasses:
    classes = sorted(_read_json("seg_classes29.json")["classes"], key=lambda c: c["id"])
    assert [c["id"] for c in classes] == list(range(len(classes)))
    return SegClasses(names=tuple(c["name"] for c in classes),
                      palette=np.asarray([c["color"] for c in classes], dtype=np.uint8))
