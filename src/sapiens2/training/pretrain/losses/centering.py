"""What the DINO and iBOT losses share: teacher targets centred by an EMA of the teacher's mean logits and
sharpened by a low temperature, which keeps them away from both collapse modes (one dominant prototype, and the
uniform distribution)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the leading dims, averaged over all ranks when distributed (every rank has the same count)."""
    m = x.reshape(-1, x.shape[-1]).float().mean(0, keepdim=True)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(m)
        m /= dist.get_world_size()
    return m


class CenteredTeacherLoss(nn.Module):
    """Holds the ``center`` buffer; subclasses define ``forward`` (the cross-entropy they take)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: list[torch.Tensor]) -> None:
        """EMA of the teacher's mean logits over every leading dim (views, batch, patches) and all ranks."""
        batch_center = global_mean(torch.cat([t.detach().reshape(-1, t.shape[-1]) for t in teacher_logits]))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
