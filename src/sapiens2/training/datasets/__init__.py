"""Training / evaluation datasets read from plain on-disk formats.

- pose: COCO keypoint JSON (308 keypoints, or COCO-WholeBody 133 mapped into the 308 layout) -> top-down crops
  with UDP heatmap targets (:class:`TopDownPoseDataset`).
- seg, normal, pointmap, albedo: the synthetic generator's folder layout (:class:`DenseDataset`).

:func:`build_dataset` picks the right one for a task and a dataset folder.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..transforms.recipes import dense_recipe, pose_recipe
from .coco import CocoKeypoints, ImageRecord, PersonRecord, read_coco_keypoints, wholebody_to_308
from ...data.collate import collate
from .dense import SEG_IGNORE_INDEX, DenseDataset, find_annotation_file
from .files import IMAGE_MEAN, IMAGE_STD, DatasetError, image_to_tensor
from .keys import item_rng
from .pose import TopDownPoseDataset

__all__ = ["CocoKeypoints", "DatasetError", "DenseDataset", "IMAGE_MEAN", "IMAGE_STD", "ImageRecord", "PersonRecord",
           "SEG_IGNORE_INDEX", "TopDownPoseDataset", "build_dataset", "collate", "find_annotation_file", "image_ids_of",
           "image_to_tensor", "item_rng", "read_coco_keypoints", "wholebody_to_308"]


def image_ids_of(root: str | Path) -> list[int]:
    """Sorted image ids of a dataset folder (or annotation file), for splitting into train / held-out parts."""
    from .files import read_json
    data = read_json(find_annotation_file(root))
    return sorted(int(e["id"]) for e in data.get("images", []))


def build_dataset(task: str, root: str | Path, *, train: bool, input_hw: tuple[int, int],
                  image_ids: Sequence[int] | None = None, seed: int = 0, augment: bool = True,
                  sigma: float | None = None, image_root: str | Path | None = None):
    """The dataset of ``task`` in ``root`` (a folder with annotations.json, or the JSON file itself).

    ``train`` with ``augment`` uses the official recipe of the task; otherwise the deterministic eval transform.
    ``image_root`` (pose): the folder image ``file_name`` paths are relative to (default: the JSON's folder).
    """
    if task == "pose":
        return TopDownPoseDataset(find_annotation_file(root), image_root, input_hw=input_hw, sigma=sigma,
                                  recipe=pose_recipe() if train and augment else None, image_ids=image_ids,
                                  seed=seed)
    return DenseDataset(task, root, input_hw=input_hw, recipe=dense_recipe(task) if train and augment else None,
                        image_ids=image_ids, seed=seed)
