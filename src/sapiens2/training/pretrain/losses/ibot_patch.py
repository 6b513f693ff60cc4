"""iBOT patch loss: at each masked place, the student's patch logits match the teacher's centred, sharpened
distribution for the same place of the same (unmasked) view. The centre is a separate EMA over patch logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dino_cls import global_mean


class IBOTPatchLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """(B, M, K) student logits and teacher probabilities at the same M masked places -> mean CE."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return (-(teacher_probs * log_p).sum(-1)).mean()

    @torch.no_grad()
    def update_center(self, teacher_logits: list[torch.Tensor]) -> None:
        batch_center = global_mean(torch.cat([t.detach().reshape(-1, t.shape[-1]) for t in teacher_logits]))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
