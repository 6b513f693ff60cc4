"""What the fine-tuning trainer asks of distillation: the datasets, the batch's targets and the loss. The trainer
keeps its loop, schedules, checkpoints, resume and DDP/FSDP; with ``config.distill`` inactive none of this runs."""
from __future__ import annotations

import logging
from typing import Any

import torch

from ...errors import TrainingConfigError
from .data import DistillDataset
from .loss import DISTILL_TABLE, DistillLoss
from .targets import read_manifest

__all__ = ["Distiller"]
logger = logging.getLogger(__name__)


class Distiller:
    """Built by the trainer from its config (``config.distill`` active) on its device."""

    def __init__(self, config, device: torch.device, amp: torch.dtype | None = None):
        d = config.distill
        if config.task not in DISTILL_TABLE:
            raise TrainingConfigError(f"distillation covers {', '.join(DISTILL_TABLE)}, not {config.task}")
        if d.teacher and d.targets:
            raise TrainingConfigError("give a teacher (outputs computed on the fly) or precomputed targets, not both")
        self.config = config
        self.teacher = None
        if d.teacher:
            from .teacher import Teacher
            self.teacher = Teacher(d.teacher, config.task, device, d.teacher_input_size, amp)
            self.teacher_hw = self.teacher.input_hw
        else:
            manifest = read_manifest(d.targets, config.task)
            self.teacher_hw = tuple(d.teacher_input_size or manifest["teacher_input_size"])
        logger.info("distilling %s from %s at %s into %s at %s", config.task, d.teacher or d.targets,
                    self.teacher_hw, config.model, tuple(config.data.input_size))

    def train_dataset(self, image_ids=None) -> DistillDataset:
        c, d = self.config, self.config.distill
        return DistillDataset(c.task, c.data.train, teacher_hw=self.teacher_hw, student_hw=tuple(c.data.input_size),
                              train=True, augment=c.data.augment, use_labels=d.use_labels, seed=c.seed,
                              targets=d.targets, flip_prob=d.flip_prob, image_ids=image_ids, sigma=c.data.sigma,
                              image_root=c.data.image_root)

    def targets(self, batch: dict[str, Any], make_targets) -> dict[str, Any]:
        """The soft targets (``soft``) plus the task's ground-truth targets where the batch has them."""
        entry = DISTILL_TABLE[self.config.task]
        out: dict[str, Any] = {}
        if all(k in batch for k in entry.gt_keys):
            out.update(make_targets(batch))
        if "soft" in batch:
            out["soft"] = batch["soft"]
        else:
            out["soft"] = self.teacher(batch.get("teacher_image", batch["image"]))
        return out

    def loss(self, task_loss) -> DistillLoss:
        return DistillLoss(self.config.task, task_loss, self.config.distill)
