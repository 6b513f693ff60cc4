"""The EMA teacher: a frozen copy of the student updated as ``t <- m t + (1 - m) s``, and its momentum schedule.

The momentum rises from ``base`` (DINOv2/the brief: 0.994) to 1 along a half cosine over the run, so the
teacher moves less and less. Updates are in place with ``lerp_`` (public API), parameter by parameter; with
FSDP2 both copies are sharded alike and each rank updates its own shard.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ...errors import TrainingConfigError


def cosine_momentum(step: int, total_steps: int, base: float = 0.994, final: float = 1.0) -> float:
    """``final - (final - base) * (1 + cos(pi * step / total)) / 2``: ``base`` at step 0, ``final`` at the end."""
    if not 0.0 <= base <= final <= 1.0:
        raise TrainingConfigError(f"momentum must satisfy 0 <= base <= final <= 1, got {base}, {final}")
    t = min(max(step, 0), max(total_steps, 1)) / max(total_steps, 1)
    return final - (final - base) * (1.0 + math.cos(math.pi * t)) / 2.0


def make_teacher(student_parts: nn.Module) -> nn.Module:
    """A deep copy of the student's shared parts with gradients off, in eval mode."""
    teacher = copy.deepcopy(student_parts)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` for every teacher parameter, matched by
    name (the student may hold more: decoder, dense projection); same-named buffers are copied."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    missing = sorted(set(t_params) - set(s_params))
    if missing:
        raise TrainingConfigError(f"the student lacks teacher parameters {missing[:5]}")
    for name, t in t_params.items():
        t.lerp_(s_params[name].detach().to(t.dtype), 1.0 - momentum)
    s_buffers = dict(student.named_buffers())
    for name, b in teacher.named_buffers():
        if name in s_buffers:
            b.copy_(s_buffers[name])
