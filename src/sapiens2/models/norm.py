"""RMSNorm that behaves the same under autocast on every device."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameters and state-dict keys) that runs in float32 inside autocast.

    CUDA's autocast runs rms_norm in float32, but CPU (and MPS) autocast leaves it out of its cast lists: a
    bfloat16 activation then meets the float32 weight, torch warns "Mismatch dtype between input and weight"
    and falls back to its slow unfused path. Normalising in float32 -- what CUDA does -- is the
    precise choice everywhere; the next autocast op casts the result down again. Outside autocast nothing changes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight is None or x.dtype == weight.dtype or not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.rms_norm(x.float(), self.normalized_shape, weight.float(), self.eps)
