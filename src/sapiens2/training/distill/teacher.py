"""The teacher: a frozen task model whose outputs, at its own input size, are the student's soft targets."""
from __future__ import annotations

import torch

from ...errors import TrainingConfigError
from ...runtime import autocast

__all__ = ["Teacher"]


class Teacher:
    """``Teacher(name_or_path, task, device)``: loads with :func:`sapiens2.load_model` (published name, file or
    folder; the task must match), eval mode, no gradients. Calling it on normalised images (B, 3, h, w) of any size
    resizes them to the teacher's input size (bilinear, in the task's pixel convention: :mod:`.resample`) and returns its raw outputs: pose heatmaps
    (B, 308, H/4, W/4) or seg logits (B, 29, H, W), float32."""

    def __init__(self, source: str, task: str, device: torch.device, input_hw: tuple[int, int] | None = None,
                 amp: torch.dtype | None = None):
        from ...checkpoints import load_model
        self.source = str(source)
        self.model = load_model(source, task=task, device=device).eval().requires_grad_(False)
        self.task = self.model.task
        if self.task != task:
            raise TrainingConfigError(f"the teacher {source} is a {self.task} model, not {task}")
        self.input_hw = tuple(int(v) for v in (input_hw or self.model.img_size))
        self.device = device
        self.amp = amp

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        if tuple(x.shape[-2:]) != self.input_hw:
            from .loss import DISTILL_TABLE
            from .resample import resample
            x = resample(x, self.input_hw, align_corners=DISTILL_TABLE[self.task].align_corners)
        with autocast(self.device, self.amp):
            out = self.model(x)
        return out.float()

