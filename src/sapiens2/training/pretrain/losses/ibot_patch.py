"""iBOT patch loss: at each masked place, the student's patch logits match the teacher's centred, sharpened
distribution for the same place of the same (unmasked) view. The centre is a separate EMA over patch logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .centering import CenteredTeacherLoss


class IBOTPatchLoss(CenteredTeacherLoss):
    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """(B, M, K) student logits and teacher probabilities at the same M masked places -> mean CE."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return (-(teacher_probs * log_p).sum(-1)).mean()
