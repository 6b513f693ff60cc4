"""Distillation datasets: items at the teacher's input size, the student's input derived from them.

Three kinds of ``--data``:

- an annotated dataset (``annotations.json``, the ``sapiens2 synth`` / COCO layouts) with ``use_labels``: the
  task's own dataset and augmentation recipe; ground truth is kept and mixes into the loss;
- the same without ``use_labels``: its images only (pose: the person boxes still cut the crops, as a detector would),
  ground truth dropped;
- a folder of images (searched recursively): pose crops the whole image, seg resizes it.

Every item is built at the teacher's input size (``teacher_image``, so the teacher sees full detail) and
resampled to the student's (``image``, in the task's pixel convention: :mod:`.resample`); without labels the only
augmentation is a horizontal flip, which the teacher sees too, so targets follow. With precomputed targets (:mod:`.targets`) there is no augmentation and the
item carries ``soft``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import TrainingConfigError
from ..datasets import DenseDataset, TopDownPoseDataset, find_annotation_file, image_to_tensor
from ..datasets.files import read_rgb
from ..datasets.keys import item_rng
from ..transforms.recipes import dense_recipe, pose_recipe
from ..transforms.topdown import eval_pose_crop
from .loss import DISTILL_TABLE
from .resample import resample
from .targets import item_key, read_target

__all__ = ["DistillDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_GT_KEYS = {"pose": ("heatmaps", "keypoint_weights"), "seg": ("seg",)}


def _annotations(root: Path) -> Path | None:
    try:
        return find_annotation_file(root)
    except (FileNotFoundError, ValueError):
        return None


class _ImageFolder(Dataset):
    """Plain images: pose = the whole image as the person box (no padding), seg = the image resized."""

    def __init__(self, task: str, root: Path, input_hw: tuple[int, int]):
        self.task, self.root, self.input_hw = task, root, input_hw
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise TrainingConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict[str, Any]:
        index = int(key[0] if isinstance(key, (tuple, list)) else key)
        image = read_rgb(self.files[index])
        h, w = self.input_hw
        if self.task == "pose":
            pixels = eval_pose_crop(image, np.array([0, 0, image.shape[1], image.shape[0]], np.float64), (w, h),
                                    padding=1.0).image
        else:
            import cv2
            pixels = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return {"image": image_to_tensor(pixels), "index": index}


class DistillDataset(Dataset):
    """See the module docstring. ``teacher_hw`` / ``student_hw`` are (H, W) model input sizes."""

    def __init__(self, task: str, root: str | Path, *, teacher_hw: tuple[int, int], student_hw: tuple[int, int],
                 train: bool = True, augment: bool = True, use_labels: bool = True, seed: int = 0,
                 targets: str | Path | None = None, flip_prob: float = 0.5, image_ids=None,
                 sigma: float | None = None, image_root: str | Path | None = None, with_keys: bool = False):
        if task not in _GT_KEYS:
            raise TrainingConfigError(f"distillation covers pose and seg, not {task!r}")
        root = Path(root)
        if not root.exists():
            raise TrainingConfigError(f"distillation data {root} does not exist")
        self.task, self.seed, self.with_keys = task, seed, with_keys
        self.teacher_hw = tuple(int(v) for v in teacher_hw)
        self.student_hw = tuple(int(v) for v in student_hw)
        self.targets = Path(targets) if targets else None
        ann = _annotations(root)
        self.labelled = bool(ann is not None and use_labels)
        # geometric augmentation changes what the teacher saw: off with precomputed targets
        self.flip_prob = flip_prob if (train and augment and self.targets is None) else 0.0
        recipe = None
        if self.labelled and train and augment:
            if self.targets is not None:
                raise TrainingConfigError("precomputed targets are for the deterministic input: set data.augment="
                                          "false, or distill.use_labels=false")
            recipe = pose_recipe() if task == "pose" else dense_recipe(task)
        if ann is None:
            self.base = _ImageFolder(task, root if root.is_dir() else root.parent, self.teacher_hw)
            self.root = self.base.root
        elif task == "pose":
            sh, sw = self.student_hw
            self.base = TopDownPoseDataset(ann, image_root, input_hw=self.teacher_hw, heatmap_hw=(sh // 4, sw // 4),
                                           sigma=sigma, recipe=recipe, image_ids=image_ids, seed=seed)
            self.root = Path(image_root) if image_root else ann.parent
        else:
            self.base = DenseDataset(task, ann.parent, input_hw=self.teacher_hw, recipe=recipe, image_ids=image_ids,
                                     seed=seed)
            self.root = ann.parent
        if self.flip_prob and self.labelled:
            self.flip_prob = 0.0  # the task's own recipe flips (with its keypoint swap) where it should

    def __len__(self) -> int:
        return len(self.base)

    def _key(self, index: int) -> str:
        base = self.base
        if isinstance(base, _ImageFolder):
            return item_key(str(base.files[index].relative_to(base.root)))
        if isinstance(base, TopDownPoseDataset):
            person = base.people[index]
            path = Path(base.coco.images[person.image_id].path)
            rel = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
            return item_key(str(rel), person.ann_id)
        return item_key(str(base.entries[index]["file_name"]))

    def __getitem__(self, key) -> dict[str, Any]:
        item = dict(self.base[key])
        index = int(item["index"])
        item["target_key"] = self._key(index)
        if not self.labelled:
            for k in _GT_KEYS[self.task]:
                item.pop(k, None)
        if self.flip_prob:
            _, rng = item_rng(key, self.seed + 7919, len(self))
            if rng.random() < self.flip_prob:
                item["image"] = torch.flip(item["image"], dims=[-1])
        teacher_image = item["image"]
        if self.teacher_hw != self.student_hw:
            item["teacher_image"] = teacher_image
            # pose: UDP corner alignment, so the student's crop is the box warped at its own size and the
            # teacher's heatmaps (resampled the same way in the loss) land on the student's heatmap grid
            item["image"] = resample(teacher_image[None], self.student_hw,
                                     align_corners=DISTILL_TABLE[self.task].align_corners)[0]
            if "seg" in item:
                import torch.nn.functional as F
                item["seg"] = F.interpolate(item["seg"][None, None].float(), size=self.student_hw,
                                            mode="nearest")[0, 0].long()
        if self.targets is not None:
            item["soft"] = read_target(self.targets, self.task, item["target_key"])
        if not self.with_keys:
            del item["target_key"]  # a string: the training batches hold tensors only
        return item
