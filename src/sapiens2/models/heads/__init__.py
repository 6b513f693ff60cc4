"""Task heads (``decode_head`` of the official task models), their configs and shape-based inference."""
from __future__ import annotations

from torch import nn

from .config import (CONFIG_CLASS, TASKS, DeconvHeadConfig, DenseHeadConfig, HeadConfig, PointmapHeadConfig,
                     as_head_config, check_task, default_head_config, head_config_from_dict)
from .deconv import PoseHeatmapHead, SegHead
from .dense import AlbedoHead, DenseDecoderTrunk, MattingHead, NormalHead
from .infer import PREDICTOR_NAMES, infer_head_config, infer_task
from .layers import ChannelRMSNorm
from .pointmap import PointmapHead, resolve_scale_features, scale_flatten_features
from .task_table import TASK_TABLE, TaskSpec, resolve_task, task_spec

HEAD_CLASSES: dict[str, type[nn.Module]] = {spec.name: spec.head_class for spec in TASK_TABLE}


def build_head(task: str, config: HeadConfig, device=None, dtype=None) -> nn.Module:
    """The ``decode_head`` module of ``task`` for a complete config (pointmap: ``scale_in_features`` set)."""
    spec = task_spec(task)
    if type(config) is not spec.config_class:
        raise TypeError(f"{spec.name} head needs a {spec.config_class.__name__}, got {type(config).__name__}")
    return spec.head_class(config, device=device, dtype=dtype)


__all__ = [
    "AlbedoHead", "CONFIG_CLASS", "ChannelRMSNorm", "DeconvHeadConfig", "DenseDecoderTrunk", "DenseHeadConfig",
    "HEAD_CLASSES", "HeadConfig", "MattingHead", "NormalHead", "PREDICTOR_NAMES", "PointmapHead", "PointmapHeadConfig",
    "PoseHeatmapHead", "SegHead", "TASKS", "TASK_TABLE", "TaskSpec", "as_head_config", "build_head", "check_task",
    "default_head_config", "head_config_from_dict", "infer_head_config", "infer_task", "resolve_scale_features",
    "resolve_task", "scale_flatten_features", "task_spec",
]
