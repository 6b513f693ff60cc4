"""Flip test: heatmaps of a horizontally mirrored crop are mirrored back, their left/right channels swapped and
averaged with the plain prediction (official: no pixel shift, UDP makes the mirror exact).

Works on NumPy arrays and torch tensors (any device) of shape (..., K, H, W).
"""
from __future__ import annotations

import numpy as np

from sapiens2.data.specs import keypoint_info

__all__ = ["flip_indices", "flip_heatmaps_back", "flip_test_average"]


def flip_indices() -> np.ndarray:
    """(308,) index of each keypoint's left/right partner (itself where it has none), from the official metadata."""
    return keypoint_info().swap


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def flip_heatmaps_back(heatmaps_of_mirrored, swap: np.ndarray | None = None):
    """Heatmaps predicted on a mirrored crop -> heatmaps for the original crop: mirror the W axis and put channel
    ``swap[k]`` at position k (so the left_wrist channel receives what the model called right_wrist)."""
    swap = flip_indices() if swap is None else np.asarray(swap, dtype=np.int64)
    k = heatmaps_of_mirrored.shape[-3] if heatmaps_of_mirrored.ndim >= 3 else -1
    if k != len(swap):
        raise ValueError(f"heatmaps must be (..., K, H, W) with K = {len(swap)} (the swap table), got shape "
                         f"{tuple(heatmaps_of_mirrored.shape)}")
    if _is_torch(heatmaps_of_mirrored):
        import torch

        index = torch.as_tensor(swap, device=heatmaps_of_mirrored.device)
        return heatmaps_of_mirrored.flip(-1).index_select(-3, index)
    return np.asarray(heatmaps_of_mirrored)[..., swap, :, ::-1]


def flip_test_average(heatmaps, heatmaps_of_mirrored, swap: np.ndarray | None = None):
    """(plain + flipped-back) / 2, the official flip-test fusion."""
    if tuple(heatmaps.shape) != tuple(heatmaps_of_mirrored.shape):
        raise ValueError(f"flip test needs two heatmap stacks of one shape, got {tuple(heatmaps.shape)} and "
                         f"{tuple(heatmaps_of_mirrored.shape)}")
    return (heatmaps + flip_heatmaps_back(heatmaps_of_mirrored, swap)) / 2.0
