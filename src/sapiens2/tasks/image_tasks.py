"""The tasks layer's part of the task table: how each image-to-map task prepares its input and finishes its output.

One :class:`ImageTaskIO` per task whose result is a map of the whole image (normal, pointmap, albedo, matting and
any task added the same way), keyed by the task name of ``models/heads/task_table.py``. Seg and pose are not
here: they feed each other (seg masks make pose boxes, pose boxes split seg into instances), so the Predictor
composes their pipelines (:mod:`sapiens2.tasks.seg`, :mod:`sapiens2.tasks.pose.pipeline`) explicitly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sapiens2.tasks.dense import albedo_result, dense_input, normal_result, pointmap_result
from sapiens2.tasks.matting import matting_input, matting_result
from sapiens2.tasks.preprocess import Padding

__all__ = ["IMAGE_TASKS", "ImageTaskIO", "one_image_output"]


@dataclass(frozen=True)
class ImageTaskIO:
    """prepare(rgb, input_hw) -> (model input (h, w, 3) uint8, padding or None);
    finish(one image's output, padding, image_hw, foreground mask or None) -> the task's result.
    ``masked_by_seg``: the result is blanked outside the seg foreground when the Predictor's mask_with_seg is on."""

    prepare: Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, Padding | None]]
    finish: Callable[[Any, Padding | None, tuple[int, int], np.ndarray | None], Any]
    masked_by_seg: bool = True


def one_image_output(output: Any, index: int) -> Any:
    """Image ``index`` of a batch output: a tensor, or a tuple of tensors (pointmap: points and scale)."""
    return tuple(part[index] for part in output) if isinstance(output, (tuple, list)) else output[index]


def _stretched(rgb: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, None]:
    return matting_input(rgb, input_hw), None  # stretched to the input size: no padding to crop


IMAGE_TASKS: dict[str, ImageTaskIO] = {
    "normal": ImageTaskIO(dense_input, normal_result),
    "pointmap": ImageTaskIO(dense_input, lambda out, pad, hw, mask: pointmap_result(out[0], out[1], pad, hw, mask)),
    "albedo": ImageTaskIO(dense_input, albedo_result),
    "matting": ImageTaskIO(_stretched, lambda out, pad, hw, mask: matting_result(out, hw), masked_by_seg=False),
}
