"""Per-task training losses, one per module, written from the official definitions (weights, masking, reductions).

Every dense loss takes ``(pred, target, valid_mask=None)`` with (B, C, H, W) tensors and a (B, 1, H, W) or
(B, H, W) mask (> 0 = has ground truth), ignores whatever the target holds outside the mask (NaN included), and
returns a scalar that is exactly 0, with a gradient, when nothing is valid. ``build_task_loss`` combines them with the
official per-task weights.
"""
from .chromaticity_l1 import chromaticity_l1
from .cosine_similarity import normal_cosine_loss
from .cross_entropy import seg_cross_entropy
from .dice import dice_loss
from .gradient import gradient_loss
from .heatmap_mse import keypoint_heatmap_mse
from .intrinsics_consistency import intrinsics_consistency_loss
from .l1 import masked_l1
from .laplacian_pyramid_l1 import laplacian_pyramid, laplacian_pyramid_l1
from .low_frequency_l1 import low_frequency_l1
from .matting_l1 import matting_l1
from .multiscale_l1 import multiscale_l1
from .pointmap_normal import pointmap_normal_loss, pointmap_to_normals
from .scale_l1 import scale_l1
from .shift_invariant_l1 import shift_invariant_l1
from .silog import silog_loss
from .sobel_gradient_l1 import sobel_gradient_l1, sobel_gradient_magnitude
from .targets import canonical_pointmap_targets, encode_pose_targets
from .task_loss import (LOSS_CONFIGS, OFFICIAL_SEG_CLASS_WEIGHTS, AlbedoLossConfig, LossConfig, MattingLossConfig,
                        NormalLossConfig, PointmapLossConfig, PoseLossConfig, SegLossConfig, TaskLoss,
                        build_task_loss, loss_config_from_dict)

__all__ = [
    "chromaticity_l1", "normal_cosine_loss", "seg_cross_entropy", "dice_loss", "gradient_loss",
    "keypoint_heatmap_mse", "intrinsics_consistency_loss", "masked_l1", "laplacian_pyramid", "laplacian_pyramid_l1",
    "low_frequency_l1", "matting_l1", "multiscale_l1", "pointmap_normal_loss", "pointmap_to_normals", "scale_l1",
    "shift_invariant_l1", "silog_loss", "sobel_gradient_l1", "sobel_gradient_magnitude",
    "canonical_pointmap_targets", "encode_pose_targets",
    "LOSS_CONFIGS", "OFFICIAL_SEG_CLASS_WEIGHTS", "AlbedoLossConfig", "LossConfig", "MattingLossConfig",
    "NormalLossConfig", "PointmapLossConfig", "PoseLossConfig", "SegLossConfig", "TaskLoss", "build_task_loss",
    "loss_config_from_dict",
]
