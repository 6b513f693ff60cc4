"""Build training targets the losses expect: pose heatmaps (UDP codec) and canonical pointmaps."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...errors import LossInputError
from ...tasks.pose.codec import encode_udp_heatmaps


def encode_pose_targets(keypoints: np.ndarray, visible: np.ndarray | None = None,
                        input_size: tuple[int, int] = (768, 1024), heatmap_size: tuple[int, int] = (192, 256),
                        sigma: float = 6.0) -> tuple[Tensor, Tensor]:
    """Heatmaps (B, K, h, w) and keypoint weights (B, K) as float32 tensors for a batch of single-person crops.

    keypoints: (B, K, 2) x, y in crop pixels (``input_size`` = (w, h) of the crop); visible: (B, K), < 0.5 means
    unlabelled. Uses :func:`sapiens2.tasks.pose.codec.encode_udp_heatmaps` (official defaults: 768x1024 input,
    192x256 heatmap, sigma 6). Weights are 0 for unlabelled points and points outside the heatmap.
    """
    kp = np.asarray(keypoints, np.float32)
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise LossInputError(f"keypoints must be (B, K, 2), got shape {kp.shape}")
    vis = np.ones(kp.shape[:2], np.float32) if visible is None else np.asarray(visible, np.float32)
    if vis.shape != kp.shape[:2]:
        raise LossInputError(f"visible must be (B, K) = {kp.shape[:2]}, got shape {vis.shape}")
    maps, weights = zip(*(encode_udp_heatmaps(kp[i], input_size, heatmap_size, sigma, vis[i])
                          for i in range(len(kp)))) if len(kp) else ((), ())
    if not maps:
        return (torch.zeros((0, kp.shape[1], heatmap_size[1], heatmap_size[0])), torch.zeros((0, kp.shape[1])))
    return torch.from_numpy(np.stack(maps)), torch.from_numpy(np.concatenate(weights))


def canonical_pointmap_targets(pointmap: Tensor, intrinsics: Tensor,
                               canonical_focal_length: float = 768.0) -> tuple[Tensor, Tensor]:
    """Official canonicalisation: ``scale = canonical_focal_length / fx`` and ``canonical = metric * scale``.

    pointmap: (B, 3, H, W) metric XYZ; intrinsics: (B, 3, 3). Returns (canonical pointmap, scale (B,)). The model is
    trained to output the canonical pointmap and the scale, so ``metric = canonical / scale`` at inference.
    """
    if pointmap.ndim != 4 or pointmap.shape[1] != 3 or intrinsics.shape != (pointmap.shape[0], 3, 3):
        raise LossInputError(f"need pointmap (B, 3, H, W) and intrinsics (B, 3, 3), got {tuple(pointmap.shape)} and "
                         f"{tuple(intrinsics.shape)}")
    fx = intrinsics[:, 0, 0].to(pointmap.dtype)
    if bool((fx <= 0).any()):
        raise LossInputError("intrinsics have a non-positive focal length fx")
    scale = canonical_focal_length / fx
    return pointmap * scale[:, None, None, None], scale
