"""Training augmentations applied identically to an image and its targets (``geometric``, ``topdown`` for pose
crops), image-only ones (``photometric``) and the official per-task recipes (``recipes``)."""
from .geometric import GeometryParams, resize_matrix, sample_geometry, warp_sample
from .recipes import (DENSE_TASKS, DenseRecipe, ImageAugment, PoseRecipe, augment_dense, augment_image, dense_recipe,
                      pose_recipe, resize_dense)
from .topdown import PoseAugment, TopDownCrop, eval_pose_crop, sample_pose_crop, topdown_matrix

__all__ = ["DENSE_TASKS", "DenseRecipe", "GeometryParams", "ImageAugment", "PoseAugment", "PoseRecipe", "TopDownCrop",
           "augment_dense", "augment_image", "dense_recipe", "eval_pose_crop", "pose_recipe", "resize_dense",
           "resize_matrix", "sample_geometry", "sample_pose_crop", "topdown_matrix", "warp_sample"]
