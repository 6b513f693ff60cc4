"""Dense-task datasets (seg, normal, pointmap, albedo) in the synthetic generator's on-disk format.

A dataset is a folder with ``annotations.json`` whose ``images`` entries name each sample's files relative to the
folder (see ``sapiens2/data/synth/writer.py``)::

    {id, file_name, height, width, seg_file, mask_file, normal_file, pointmap_file, albedo_file,
     intrinsics: [fx, fy, cx, cy]}

Only the files the task needs must exist: seg ``seg_file`` (uint8/uint16 PNG of class ids 0..28, 255 = no label);
normal ``normal_file`` (.npy (H, W, 3) unit vectors, camera frame) + ``mask_file``; pointmap ``pointmap_file``
(.npy (H, W, 3) metres, camera frame) + ``mask_file`` + ``intrinsics``; albedo ``albedo_file`` (.npy (H, W, 3) in
[0, 1]) + ``mask_file``. Masks are PNGs, > 0 = has ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.specs import seg_classes
from ..transforms.recipes import DENSE_TASKS, DenseRecipe, augment_dense, resize_dense
from .files import DatasetError, image_to_tensor, read_array, read_json, read_label_png, read_rgb
from .keys import item_rng

__all__ = ["DenseDataset", "SEG_IGNORE_INDEX", "find_annotation_file"]

SEG_IGNORE_INDEX = 255
_FILE_KEY = {"seg": "seg_file", "normal": "normal_file", "pointmap": "pointmap_file", "albedo": "albedo_file"}


def find_annotation_file(root: str | Path) -> Path:
    """``root`` itself if it is a JSON file, else ``root/annotations.json``."""
    root = Path(root)
    if root.is_file():
        return root
    path = root / "annotations.json"
    if not path.is_file():
        raise DatasetError(f"no annotations.json in {root} (expected the dataset layout of "
                           f"sapiens2.data.synth.writer)")
    return path


class DenseDataset(Dataset):
    """Items are dicts: ``image`` (3, H, W) normalised; the task target — ``seg`` (H, W) int64, or ``normal`` /
    ``pointmap`` (metric) / ``albedo`` (3, H, W) float32 — with ``mask`` (1, H, W) float32 (1 = has ground
    truth); pointmap adds ``K`` (3, 3) of the returned image; ``index`` and ``image_id``.

    ``recipe=None``: a deterministic resize to ``input_hw`` (evaluation); otherwise the task's random recipe.
    """

    def __init__(self, task: str, root: str | Path, input_hw: tuple[int, int] = (1024, 768),
                 recipe: DenseRecipe | None = None, image_ids: Sequence[int] | None = None, seed: int = 0):
        if task not in DENSE_TASKS:
            raise DatasetError(f"DenseDataset serves {', '.join(DENSE_TASKS)}, not {task!r}")
        self.task = task
        self.ann_file = find_annotation_file(root)
        self.root = self.ann_file.parent
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.recipe = recipe
        self.seed = seed
        self.num_classes = len(seg_classes().names)
        data = read_json(self.ann_file)
        entries = data.get("images") if isinstance(data, dict) else None
        if not entries:
            raise DatasetError(f"{self.ann_file} has no 'images' list")
        needed = ["id", "file_name", "height", "width", _FILE_KEY[task]]
        if task != "seg":
            needed.append("mask_file")
        if task == "pointmap":
            needed.append("intrinsics")
        for i, e in enumerate(entries):
            missing = [k for k in needed if k not in e]
            if missing:
                raise DatasetError(f"{self.ann_file}: images[{i}] (id {e.get('id')}) lacks {', '.join(missing)}, "
                                   f"needed for {task}")
            if task == "pointmap" and len(e["intrinsics"]) != 4:
                raise DatasetError(f"{self.ann_file}: images[{i}] intrinsics must be [fx, fy, cx, cy]")
        if image_ids is not None:
            by_id = {int(e["id"]): e for e in entries}
            unknown = [i for i in image_ids if int(i) not in by_id]
            if unknown:
                raise DatasetError(f"image ids not in {self.ann_file}: {unknown[:10]}")
            entries = [by_id[int(i)] for i in image_ids]
        self.entries = list(entries)
        self.image_ids = [int(e["id"]) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def read_sample(self, index: int) -> dict[str, Any]:
        """The sample as stored: numpy ``image`` (H, W, 3) uint8 and the task's target arrays."""
        e = self.entries[index]
        image = read_rgb(self.root / e["file_name"])
        hw = image.shape[:2]
        if hw != (int(e["height"]), int(e["width"])):
            raise DatasetError(f"image {e['file_name']} is {hw[0]}x{hw[1]} but annotations.json says "
                               f"{e['height']}x{e['width']}")
        sample: dict[str, Any] = {"image": image}
        path = self.root / e[_FILE_KEY[self.task]]
        if self.task == "seg":
            seg = read_label_png(path, "seg map", hw)
            bad = np.unique(seg[(seg >= self.num_classes) & (seg != SEG_IGNORE_INDEX)])
            if bad.size:
                raise DatasetError(f"seg map {path} holds class ids {bad[:10].tolist()} outside "
                                   f"0..{self.num_classes - 1} (and not the ignore value {SEG_IGNORE_INDEX})")
            sample["seg"] = seg.astype(np.int32)
            return sample
        sample["mask"] = (read_label_png(self.root / e["mask_file"], "mask", hw) > 0).astype(np.uint8)
        target = read_array(path, f"{self.task} map", hw)
        valid = sample["mask"] > 0
        if not np.all(np.isfinite(target[valid])):
            raise DatasetError(f"{self.task} map {path} has non-finite values inside the mask")
        target[~valid] = 0.0  # placeholders outside the mask must not leak through interpolation
        sample[self.task] = target
        if self.task == "pointmap":
            fx, fy, cx, cy = (float(v) for v in e["intrinsics"])
            if fx <= 0 or fy <= 0:
                raise DatasetError(f"images id {e['id']}: focal lengths must be > 0, got fx={fx}, fy={fy}")
            sample["K"] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)
        return sample

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed, len(self))
        sample = self.read_sample(index)
        if self.recipe is None:
            sample = resize_dense(sample, self.input_hw)
        else:
            sample = augment_dense(sample, rng, self.recipe, self.task, self.input_hw)
        item: dict[str, Any] = {"image": image_to_tensor(sample["image"]), "index": index,
                                "image_id": self.image_ids[index]}
        if self.task == "seg":
            item["seg"] = torch.from_numpy(sample["seg"].astype(np.int64))
            return item
        item["mask"] = torch.from_numpy(sample["mask"].astype(np.float32))[None]
        item[self.task] = torch.from_numpy(np.ascontiguousarray(sample[self.task].transpose(2, 0, 1)))
        if self.task == "pointmap":
            item["K"] = torch.from_numpy(sample["K"])
        return item
