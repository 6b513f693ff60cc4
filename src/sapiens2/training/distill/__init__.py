"""Distillation into small students through the fine-tuning trainer (``sapiens2 distill``): soft targets from a
teacher run on the fly or read from precomputed files, on unlabelled images, with ground truth mixed in where
present. See README "Real time". Modules: ``config`` (the config section), ``data`` (datasets), ``teacher``,
``targets`` (the precomputed-targets file layout), ``loss`` (the per-task soft-target terms), ``session`` (what the
trainer calls)."""
from .config import DistillConfig

__all__ = ["DistillConfig"]
