"""Reading the files of a training dataset, with errors that name the file and what is wrong with it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ...errors import Sapiens2Error
from ...runtime import PIXEL_MEAN, PIXEL_STD, normalise_pixels

__all__ = ["DatasetError", "read_json", "read_rgb", "read_label_png", "read_array", "image_to_tensor",
           "IMAGE_MEAN", "IMAGE_STD"]

IMAGE_MEAN, IMAGE_STD = PIXEL_MEAN, PIXEL_STD  # the official normalisation, under the names datasets export


class DatasetError(Sapiens2Error, ValueError):
    """A dataset on disk is missing a file or holds data of the wrong shape, type or range."""


def _exists(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")
    return path


def read_json(path: str | os.PathLike[str], what: str = "annotation file") -> Any:
    p = _exists(Path(path), what)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{what} {p} is not valid JSON: {e}") from None


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    img = cv2.imread(str(_exists(path, "image")), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode image {path}")
    return np.ascontiguousarray(img[..., ::-1])


def read_label_png(path: Path, what: str, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) single-channel integer PNG (8 or 16 bit) of the image's size."""
    arr = cv2.imread(str(_exists(path, what)), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DatasetError(f"cannot decode {what} {path}")
    if arr.ndim != 2:
        raise DatasetError(f"{what} {path} must be a single-channel PNG, got shape {arr.shape}")
    if arr.shape != tuple(hw):
        raise DatasetError(f"{what} {path} is {arr.shape[0]}x{arr.shape[1]} but its image is {hw[0]}x{hw[1]}")
    return arr


def read_array(path: Path, what: str, hw: tuple[int, int], channels: int = 3) -> np.ndarray:
    """(H, W, channels) float32 from a .npy file; checks the shape against the image and finiteness."""
    try:
        arr = np.load(_exists(path, what), allow_pickle=False)
    except ValueError as e:
        raise DatasetError(f"cannot read {what} {path}: {e}") from None
    want = (hw[0], hw[1], channels)
    if arr.shape != want:
        raise DatasetError(f"{what} {path} has shape {arr.shape}, expected {want} (H, W, {channels})")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DatasetError(f"{what} {path} must hold floats, got {arr.dtype}")
    return arr.astype(np.float32)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised with the official mean / std."""
    return normalise_pixels(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float())
