"""Top-down pose dataset: one item per annotated person, cropped to the model input with its heatmap targets."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...tasks.pose.codec import encode_udp_heatmaps
from ..transforms.recipes import PoseRecipe, augment_image
from ..transforms.topdown import eval_pose_crop, sample_pose_crop
from .coco import CocoKeypoints, read_coco_keypoints
from .files import DatasetError, image_to_tensor, read_rgb
from .keys import item_rng

__all__ = ["TopDownPoseDataset"]


class TopDownPoseDataset(Dataset):
    """Items are dicts: ``image`` (3, H, W) normalised, ``heatmaps`` (308, H/4, W/4), ``keypoint_weights`` (308,),
    and for evaluation ``center``, ``size`` (2,) float64 (the crop box in image pixels), ``image_id``, ``ann_id``,
    ``index``.

    ``recipe=None`` gives the deterministic evaluation crop (the padded ground-truth box). Keys may be an index or
    an ``(index, augmentation_seed)`` pair (what :class:`~sapiens2.training.sampling.GlobalBatchSampler` yields).
    """

    task = "pose"

    def __init__(self, ann_file: str | Path, image_root: str | Path | None = None,
                 input_hw: tuple[int, int] = (1024, 768), heatmap_hw: tuple[int, int] | None = None,
                 sigma: float | None = None, recipe: PoseRecipe | None = None,
                 image_ids: Sequence[int] | None = None, seed: int = 0, coco: CocoKeypoints | None = None):
        self.coco = coco if coco is not None else read_coco_keypoints(ann_file, image_root)
        self.input_hw = tuple(int(v) for v in input_hw)
        if self.input_hw[0] % 4 or self.input_hw[1] % 4:
            raise DatasetError(f"pose input size {self.input_hw} must be a multiple of 4 (heatmaps are 1/4 size)")
        self.heatmap_hw = tuple(heatmap_hw) if heatmap_hw else (self.input_hw[0] // 4, self.input_hw[1] // 4)
        # Official sigma 6 at 256x192 heatmaps; scale it with the heatmap so small inputs keep the same blob.
        self.sigma = float(sigma) if sigma is not None else 6.0 * self.heatmap_hw[1] / 192
        self.recipe = recipe
        self.seed = seed
        people = self.coco.people
        if image_ids is not None:
            wanted = set(int(i) for i in image_ids)
            unknown = wanted - set(self.coco.images)
            if unknown:
                raise DatasetError(f"image ids not in the annotation file: {sorted(unknown)[:10]}")
            people = [p for p in people if p.image_id in wanted]
        self.people = people
        self.image_ids = sorted({p.image_id for p in people})

    def __len__(self) -> int:
        return len(self.people)

    @property
    def input_wh(self) -> tuple[int, int]:
        return self.input_hw[1], self.input_hw[0]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed, len(self))
        person = self.people[index]
        record = self.coco.images[person.image_id]
        image = read_rgb(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise DatasetError(f"image {record.path} is {image.shape[0]}x{image.shape[1]} but the annotation says "
                               f"{record.height}x{record.width}")
        if self.recipe is not None:
            crop = sample_pose_crop(rng, image, person.bbox_xyxy, person.keypoints[:, :2], person.keypoints[:, 2] > 0,
                                    self.input_wh, self.recipe.geometry)
            pixels = augment_image(crop.image, rng, self.recipe.image, "pose")
        else:
            crop = eval_pose_crop(image, person.bbox_xyxy, self.input_wh)
            m = crop.matrix.astype(np.float64)
            crop.keypoints = (person.keypoints[:, :2] @ m[:, :2].T + m[:, 2]).astype(np.float32)
            crop.visible = (person.keypoints[:, 2] > 0).astype(np.float32)
            pixels = crop.image
        heatmaps, weights = encode_udp_heatmaps(crop.keypoints, self.input_wh, (self.heatmap_hw[1], self.heatmap_hw[0]),
                                                self.sigma, crop.visible)
        return {"image": image_to_tensor(pixels), "heatmaps": torch.from_numpy(heatmaps),
                "keypoint_weights": torch.from_numpy(weights[0]), "center": torch.from_numpy(crop.center),
                "size": torch.from_numpy(np.asarray(crop.size, np.float64)), "image_id": person.image_id,
                "ann_id": person.ann_id, "index": index}
