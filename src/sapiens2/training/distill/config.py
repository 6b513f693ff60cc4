"""The distillation section of the training config (``TrainConfig.distill``): where the soft targets come from and
how they weigh against ground truth. Plain data; :mod:`.session` acts on it."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DistillConfig"]


@dataclass
class DistillConfig:
    teacher: str | None = None  # a task checkpoint (published name or file) run on the fly; or None with targets
    targets: str | None = None  # a folder of precomputed teacher outputs (see distill/targets.py for the layout)
    teacher_input_size: tuple[int, int] | None = None  # (H, W); None = the teacher's own (recorded) size
    kd_weight: float = 1.0  # weight of the soft-target term (pose: x10 like the heatmap loss)
    gt_weight: float = 1.0  # weight of the task's own loss where ground truth is present (0 = soft targets only)
    use_labels: bool = True  # False: ignore the labels of an annotated dataset (boxes still cut the pose crops)
    temperature: float = 1.0  # seg: softmax temperature of the KL term (scaled by T^2)
    hard_weight: float = 0.0  # seg: weight of the task loss (CE + Dice) on the teacher's argmax, beside the KL term
    flip_prob: float = 0.5  # unlabelled images: horizontal flips (the teacher sees the same flipped input)

    @property
    def active(self) -> bool:
        return bool(self.teacher or self.targets)
