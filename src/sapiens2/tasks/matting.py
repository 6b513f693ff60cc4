"""Matting pipeline (official ``vis_matting``): stretch to the model input (INTER_AREA when the width shrinks, else
INTER_LINEAR), the head's sigmoid output (4, h, w) bilinearly upsampled (align_corners=False) to the original size,
clipped to [0, 1]; channels 0-2 are the foreground colour pre-multiplied by alpha (RGB), channel 3 is alpha."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from sapiens2.tasks.dense import unit_range, upsample_to_hwc
from sapiens2.tasks.preprocess import stretch_resize
from sapiens2.tasks.results import MattingResult

__all__ = ["matting_input", "matting_result"]


def matting_input(rgb: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> the (input_h, input_w, 3) uint8 model input."""
    return stretch_resize(rgb, input_hw, cv2.INTER_LINEAR)


def matting_result(output: torch.Tensor, image_hw: tuple[int, int]) -> MattingResult:
    """Model output (4, h, w) of one image -> alpha (H, W) and premultiplied foreground (H, W, 3) in [0, 1]."""
    if output.ndim != 3 or output.shape[0] != 4:
        raise ValueError(f"matting output must be (4, h, w) for one image, got shape {tuple(output.shape)}")
    # separate arrays: no (H, W, 4) intermediate to split; each band clipped to [0, 1] as it is made
    foreground = upsample_to_hwc(output[:3], image_hw, lambda band, rows: unit_range(band))
    alpha = upsample_to_hwc(output[3:], image_hw, lambda band, rows: unit_range(band))[..., 0]
    return MattingResult(alpha=alpha, foreground=foreground)
