"""DINO class-token loss: student class logits match the teacher's centred, sharpened distribution of OTHER views.

Teacher probabilities are ``softmax((t - center) / teacher_temp)``; the centre is an EMA (``center_momentum``,
DINO: 0.9) of the teacher's mean logits over the global batch (all-reduced across ranks), which with the low
teacher temperature (sharpening) keeps the targets away from both collapse modes: one dominant prototype
and the uniform distribution. Defaults are DINO's: student temperature 0.1, teacher 0.04 -> 0.07 warm-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .centering import CenteredTeacherLoss


def teacher_temperature(step: int, warmup_steps: int, start: float = 0.04, final: float = 0.07) -> float:
    """Linear warm-up of the teacher temperature from ``start`` to ``final`` over ``warmup_steps``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return final
    return start + (final - start) * max(step, 0) / warmup_steps


class DINOClassLoss(CenteredTeacherLoss):
    def forward(self, student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over (student view, teacher view) pairs with different views.

        ``student_logits``: the global views first (same order as the teacher's), then any local views;
        ``teacher_probs``: one (B, K) per global view, from :meth:`teacher_probs`.
        """
        total, pairs = 0.0, 0
        for si, s in enumerate(student_logits):
            log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
            for ti, t in enumerate(teacher_probs):
                if si == ti:
                    continue
                total = total + (-(t * log_p).sum(-1)).mean()
                pairs += 1
        if pairs == 0:  # a single global view and no locals: fall back to same-view distillation
            log_p = F.log_softmax(student_logits[0].float() / self.student_temp, dim=-1)
            return (-(teacher_probs[0] * log_p).sum(-1)).mean()
        return total / pairs
