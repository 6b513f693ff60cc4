"""Distillation loss: the soft-target term of each task (a typed table) plus the task's own loss where ground truth
is present. Same call shape as :class:`~sapiens2.training.losses.TaskLoss`: ``(outputs, targets) -> (total, terms)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses.heatmap_mse import keypoint_heatmap_mse
from .config import DistillConfig
from .resample import resample

__all__ = ["DISTILL_TABLE", "DistillEntry", "DistillLoss"]


def _pose_kd(student: Tensor, soft: Tensor, config: DistillConfig) -> Tensor:
    """MSE to the teacher's heatmaps over every keypoint, x10 like the official heatmap loss."""
    return 10.0 * keypoint_heatmap_mse(student, soft)


def _seg_kd(student: Tensor, soft: Tensor, config: DistillConfig) -> Tensor:
    """KL(teacher || student) of the per-pixel class distributions at temperature T, times T^2, mean over pixels."""
    t = float(config.temperature)
    log_p = F.log_softmax(student / t, dim=1)
    log_q = F.log_softmax(soft / t, dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(1).mean() * (t * t)


def _seg_hard_labels(soft: Tensor) -> dict[str, Tensor]:
    """The teacher's argmax as the seg loss's ``seg`` labels, at the teacher's output size."""
    return {"seg": soft.argmax(1)}


@dataclass(frozen=True)
class DistillEntry:
    """A task's soft-target term (``kd(student_output, teacher_output, config)``), the ground-truth keys whose
    presence in a batch switches the task's own loss on, and the task's pixel convention for resampling between the
    teacher's and the student's grids (:mod:`.resample`: pose UDP corner alignment, seg half-pixel).
    ``hard_labels``: the task loss's targets made from the teacher's raw output (``distill.hard_weight``), or None
    where the task has none."""

    kd: Callable[[Tensor, Tensor, DistillConfig], Tensor]
    gt_keys: tuple[str, ...]
    align_corners: bool
    hard_labels: Callable[[Tensor], dict[str, Tensor]] | None = None


DISTILL_TABLE: dict[str, DistillEntry] = {
    "pose": DistillEntry(_pose_kd, ("heatmaps", "keypoint_weights"), align_corners=True),
    "seg": DistillEntry(_seg_kd, ("seg",), align_corners=False, hard_labels=_seg_hard_labels),
}


class DistillLoss:
    """``loss_kd`` (kd_weight x the table's term against ``targets["soft"]``) + hard_weight x the task loss's terms
    on the teacher's hard labels (seg: its argmax; named ``<term>_teacher``, e.g. ``loss_dice_teacher``) +
    gt_weight x the task loss's terms (named as usual, e.g. ``loss_kpt``) when the batch has ground truth.

    Why the hard term: the seg task loss is cross-entropy plus Dice, and Dice is what lifts the small body parts that
    mIoU averages over; the KL alone lets a small student settle on the teacher's dominant background (measured in
    benchmarks/student.py: 63% of the teacher's mIoU with the KL alone)."""

    def __init__(self, task: str, task_loss: Callable[[Any, Mapping[str, Any]], tuple[Tensor, dict[str, Tensor]]],
                 config: DistillConfig):
        self.task = task
        self.entry = DISTILL_TABLE[task]
        self.task_loss = task_loss
        self.config = config

    def __call__(self, outputs: Tensor, targets: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        outputs = outputs.float()
        terms: dict[str, Tensor] = {}
        if self.config.kd_weight:
            soft = resample(targets["soft"].float(), outputs.shape[-2:], align_corners=self.entry.align_corners)
            terms["loss_kd"] = self.config.kd_weight * self.entry.kd(outputs, soft, self.config)
        if self.config.hard_weight and self.entry.hard_labels is not None:
            _, hard_terms = self.task_loss(outputs, self.entry.hard_labels(targets["soft"].float()))
            terms.update({f"{k}_teacher": self.config.hard_weight * v for k, v in hard_terms.items()})
        if self.config.gt_weight and all(k in targets for k in self.entry.gt_keys):
            _, gt_terms = self.task_loss(outputs, targets)
            terms.update({k: self.config.gt_weight * v for k, v in gt_terms.items()})
        if not terms:
            from ...errors import TrainingConfigError
            raise TrainingConfigError("distillation has nothing to optimise: kd_weight is 0 and the data has no "
                                      "ground truth (or gt_weight is 0)")
        return sum(terms.values()), terms
