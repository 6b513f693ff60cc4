"""Precomputed teacher outputs on disk: label once (e.g. on a GPU cluster), distil many times.

Layout of a targets folder (what :func:`write_teacher_targets` writes and ``sapiens2 distill --targets`` reads)::

    TARGETS/<task>/manifest.json   {"format": "sapiens2-distill-targets/1", "task": "pose"|"seg",
                                    "teacher": NAME_OR_PATH, "teacher_input_size": [H, W], "count": N}
    TARGETS/<task>/<key>.npy       float16 teacher output for one training item, at the teacher's output size:
                                   pose (308, H/4, W/4) heatmaps of the crop; seg (29, H, W) logits of the image

``<key>`` is the image's path relative to the dataset folder, without its suffix, ``/`` replaced by ``__``, plus
``.<ann_id>`` for a pose crop of an annotated person (see :func:`item_key`). Any batch-inference engine can write
this layout: the input an output belongs to is the dataset's deterministic input for that item (the person box
padded 1.25x and cropped to the teacher's aspect for pose, the whole image resized for seg), with no augmentation,
which is why training from precomputed targets turns geometric augmentation off.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ...errors import TrainingConfigError
from ...io.writers import atomic_path

__all__ = ["FORMAT", "item_key", "read_manifest", "read_target", "write_teacher_targets"]

FORMAT = "sapiens2-distill-targets/1"
logger = logging.getLogger(__name__)


def item_key(relative_image: str, ann_id: int | None = None) -> str:
    stem = str(Path(relative_image).with_suffix("")).replace("\\", "/").replace("/", "__")
    return stem if ann_id is None else f"{stem}.{int(ann_id)}"


def read_manifest(folder: str | Path, task: str) -> dict:
    path = Path(folder) / task / "manifest.json"
    if not path.is_file():
        raise TrainingConfigError(f"{folder} is not a targets folder: no manifest.json (write one with "
                                  f"sapiens2 distill --write-targets {folder})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise TrainingConfigError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("task") != task:
        raise TrainingConfigError(f"{folder} holds {manifest.get('task')} targets, not {task}")
    return manifest


def read_target(folder: str | Path, task: str, key: str) -> torch.Tensor:
    path = Path(folder) / task / f"{key}.npy"
    if not path.is_file():
        raise TrainingConfigError(f"no precomputed {task} target for {key!r} ({path}); the targets folder was "
                                  "written for another dataset: rewrite it with --write-targets")
    return torch.from_numpy(np.load(path).astype(np.float32))


@torch.no_grad()
def write_teacher_targets(teacher, dataset, folder: str | Path, batch_size: int = 8,
                          progress: bool = False) -> int:
    """Run ``teacher`` (a :class:`~.teacher.Teacher`) over ``dataset`` (a :class:`~.data.DistillDataset` built with
    ``train=False, with_keys=True``) and write the layout above. Returns the number of files written."""
    folder = Path(folder)
    task = teacher.task
    (folder / task).mkdir(parents=True, exist_ok=True)
    from ...data.collate import collate
    n = 0
    indices = range(len(dataset))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc=f"teacher {task}", unit="item")
    batch = []
    for i in list(indices) + [None]:
        if i is not None:
            batch.append(dataset[i])
        if batch and (i is None or len(batch) == batch_size):
            b = collate([{k: v for k, v in it.items() if k in ("image", "teacher_image")} for it in batch])
            out = teacher(b.get("teacher_image", b["image"]))
            for item, soft in zip(batch, out):
                with atomic_path(folder / task / f"{item['target_key']}.npy") as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, soft.float().cpu().numpy().astype(np.float16))
                n += 1
            batch = []
    manifest = {"format": FORMAT, "task": task, "teacher": teacher.source,
                "teacher_input_size": list(teacher.input_hw), "count": n}
    with atomic_path(folder / task / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1))
    logger.info("wrote %d %s targets to %s", n, task, folder)
    return n
