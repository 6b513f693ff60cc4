"""Typed results of the inference pipelines: NumPy arrays at the original image resolution.

Conventions: images are (H, W) of the input after EXIF orientation; coordinates are pixels with (0, 0)
the centre of the top-left pixel; boxes are xyxy; RGB channel order; float32 unless stated.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PoseResult:
    """Top-down pose for each person box."""
    boxes: np.ndarray  # (P, 4) xyxy, the person boxes the crops were taken from
    box_scores: np.ndarray  # (P,) detector scores (1.0 for boxes from a file without scores / whole image)
    keypoints: np.ndarray  # (P, 308, 2) x, y in image pixels, official keypoint order
    scores: np.ndarray  # (P, 308) heatmap maxima
    box_source: str = "detector"  # "detector:<name>", "file", "seg", "whole_image"
    whole_image_fallback: bool = False  # no person was found, so the whole image was used as one box

    @property
    def num_people(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class SegResult:
    mask: np.ndarray  # (H, W) uint8 class ids, official 29 classes, 0 = Background
    probabilities: np.ndarray | None = None  # (29, H, W) float32 softmax, on request
    instance_masks: np.ndarray | None = None  # (P, H, W) bool: foreground inside each known person box

    @property
    def foreground(self) -> np.ndarray:
        return self.mask > 0


@dataclass
class NormalResult:
    normals: np.ndarray  # (H, W, 3) unit vectors, camera frame (official convention); 0 where masked out
    mask: np.ndarray | None = None  # (H, W) bool foreground used to blank the background, if any


@dataclass
class PointmapResult:
    pointmap: np.ndarray  # (H, W, 3) metric camera-frame XYZ in metres (= raw pointmap / scale)
    scale: float  # the model's scale output (raw / scale = metric)
    mask: np.ndarray | None = None  # (H, W) bool foreground, if any; NaN-free, masked pixels are 0

    @property
    def depth(self) -> np.ndarray:
        """(H, W) metres: the Z channel."""
        return self.pointmap[..., 2]


@dataclass
class AlbedoResult:
    albedo: np.ndarray  # (H, W, 3) RGB in [0, 1]
    mask: np.ndarray | None = None


@dataclass
class MattingResult:
    alpha: np.ndarray  # (H, W) in [0, 1]
    foreground: np.ndarray  # (H, W, 3) RGB in [0, 1], pre-multiplied by alpha (official output)


@dataclass
class Prediction:
    """Everything predicted for one image (or one video frame). A failed input from ``predict_many`` has ``error``
    set (``ok`` False), ``image_size`` (0, 0) and no results."""
    image_size: tuple[int, int]  # (H, W)
    source: Path | None = None
    frame_index: int | None = None  # for video frames
    pose: PoseResult | None = None
    seg: SegResult | None = None
    normal: NormalResult | None = None
    pointmap: PointmapResult | None = None
    albedo: AlbedoResult | None = None
    matting: MattingResult | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage: "forward", "pre", "post"
    # Set instead of the results when this input failed (``Predictor.predict_many`` keeps going): the exception.
    error: BaseException | None = None
    # Results of tasks added to the task table beyond the built-in six (no field of their own): task -> result.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self, task: str):
        return self.extra[task] if task in self.extra else getattr(self, task)

    def set(self, task: str, result: Any) -> None:
        """Store a task's result: in its field for the built-in tasks, in ``extra`` for others."""
        if task in {f.name for f in fields(self)}:  # a typed field (pose, seg, ...)
            setattr(self, task, result)
        else:
            self.extra[task] = result

