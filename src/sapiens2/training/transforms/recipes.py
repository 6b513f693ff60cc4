"""The official per-task training augmentation recipes, and the deterministic evaluation resize.

Sources (facebookresearch/sapiens2 configs, 1024x768):
- seg: random resize 0.4–2.0 + 1024x768 crop (p 0.3), Gaussian blur (p 0.3), Gaussian noise (p 0.3), rotation
  ±60° (p 0.5, padded as background), flip with Left_/Right_ swap (p 0.5), photometric distortion.
- normal: photometric distortion, down-up sampling (p 0.2), scale 0.5–2.0 (p 0.3), crop area 0.4–1.0 / aspect
  0.5–2.0 (p 0.3), flip (p 0.3), blur (p 0.3), noise (p 0.3), solarize (p 0.3).
- pointmap: photometric distortion, scale (p 0.3), crop (p 0.3), flip (p 0.3).
- albedo: scale (p 0.3), crop (p 0.3), flip (p 0.3), noise (p 0.2) — no colour change: the target *is* colour.
- pose: see ``topdown.py``; then photometric distortion (p 0.8), blur (p 0.1), median blur (p 0.1), one coarse
  dropout hole of 20–40% (p 1.0).
The geometric steps are composed into one warp to the output size (``geometric.py``); "scale" is a zoom about the
image centre (zoom-out pads with background), which is its net effect once the official pipeline resizes to the
fixed input size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import TrainingError
from . import photometric as photo
from .geometric import GeometryParams, resize_matrix, sample_geometry, warp_sample
from .topdown import PoseAugment

__all__ = ["ImageAugment", "DenseRecipe", "PoseRecipe", "dense_recipe", "pose_recipe", "augment_dense",
           "resize_dense", "augment_image", "DENSE_TASKS"]

DENSE_TASKS = ("seg", "normal", "pointmap", "albedo")


@dataclass(frozen=True)
class ImageAugment:
    """Probabilities of the image-only steps (0 = off), applied in this order."""

    photometric_prob: float = 0.0
    down_up_prob: float = 0.0
    blur_prob: float = 0.0
    median_blur_prob: float = 0.0
    noise_prob: float = 0.0
    solarize_prob: float = 0.0
    dropout_prob: float = 0.0


@dataclass(frozen=True)
class DenseRecipe:
    geometry: GeometryParams = field(default_factory=GeometryParams)
    image: ImageAugment = field(default_factory=ImageAugment)


@dataclass(frozen=True)
class PoseRecipe:
    geometry: PoseAugment = field(default_factory=PoseAugment)
    image: ImageAugment = field(default_factory=ImageAugment)


_CROP = dict(crop_area_range=(0.4, 1.0), crop_aspect_range=(0.5, 2.0))


def dense_recipe(task: str) -> DenseRecipe:
    """The official augmentation recipe of a dense task (``seg``, ``normal``, ``pointmap``, ``albedo``)."""
    if task == "seg":
        return DenseRecipe(GeometryParams(crop_prob=0.3, crop_area_range=(0.25, 1.0), rotate_prob=0.5,
                                          max_rotate_deg=60.0, flip_prob=0.5),
                           ImageAugment(photometric_prob=1.0, blur_prob=0.3, noise_prob=0.3))
    geometry = GeometryParams(scale_prob=0.3, scale_range=(0.5, 2.0), crop_prob=0.3, flip_prob=0.3, **_CROP)
    if task == "normal":
        return DenseRecipe(geometry, ImageAugment(photometric_prob=1.0, down_up_prob=0.2, blur_prob=0.3,
                                                  noise_prob=0.3, solarize_prob=0.3))
    if task == "pointmap":
        return DenseRecipe(geometry, ImageAugment(photometric_prob=1.0))
    if task == "albedo":
        return DenseRecipe(geometry, ImageAugment(noise_prob=0.2))
    raise TrainingError(f"no dense augmentation recipe for task {task!r}; dense tasks: {', '.join(DENSE_TASKS)}")


def pose_recipe() -> PoseRecipe:
    return PoseRecipe(PoseAugment(), ImageAugment(photometric_prob=0.8, blur_prob=0.1, median_blur_prob=0.1,
                                                  dropout_prob=1.0))


def augment_image(image: np.ndarray, rng: np.random.Generator, aug: ImageAugment, task: str) -> np.ndarray:
    """The image-only steps. Colour-changing steps are refused for albedo whatever the recipe says."""
    if task == "albedo" and (aug.photometric_prob > 0 or aug.solarize_prob > 0):
        raise TrainingError("albedo targets are colours: photometric distortion and solarize must stay off")
    steps = ((aug.photometric_prob, photo.photometric_distortion), (aug.down_up_prob, photo.down_up_sample),
             (aug.blur_prob, photo.gaussian_blur), (aug.median_blur_prob, photo.median_blur),
             (aug.noise_prob, photo.gaussian_noise), (aug.solarize_prob, photo.solarize),
             (aug.dropout_prob, photo.coarse_dropout))
    for prob, fn in steps:
        if prob > 0 and rng.random() < prob:
            image = fn(image, rng)
    return image


def augment_dense(sample: dict[str, Any], rng: np.random.Generator, recipe: DenseRecipe, task: str,
                  out_hw: tuple[int, int]) -> dict[str, Any]:
    """Random warp of image + targets to ``out_hw``, then the image-only steps."""
    in_hw = sample["image"].shape[:2]
    matrix, flipped = sample_geometry(rng, recipe.geometry, in_hw, out_hw)
    out = warp_sample(sample, matrix, out_hw, flipped)
    out["image"] = augment_image(out["image"], rng, recipe.image, task)
    return out


def resize_dense(sample: dict[str, Any], out_hw: tuple[int, int]) -> dict[str, Any]:
    """Deterministic resize (aspect not kept, as the official seg pipeline) of image + targets to ``out_hw``."""
    in_hw = sample["image"].shape[:2]
    if tuple(in_hw) == tuple(out_hw):
        return dict(sample)
    return warp_sample(sample, resize_matrix(in_hw, out_hw), out_hw)
