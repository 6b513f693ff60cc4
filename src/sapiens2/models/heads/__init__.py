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

HEAD_CLASSES: dict[str, type[nn.Module]] = {
    "pose": PoseHeatmapHead, "seg": SegHead, "normal": NormalHead, "albedo": AlbedoHead,
    "matting": MattingHead, "pointmap": PointmapHead,
}


def build_head(task: str, config: HeadConfig, device=None, dtype=None) -> nn.Module:
    """The ``decode_head`` module of ``task`` for a complete config (pointmap: ``scale_in_features`` set)."""
    task = check_task(task)
    if type(config) is not CONFIG_CLASS[task]:
        raise TypeError(f"{task} head needs a {CONFIG_CLASS[task].__name__}, got {type(config).__name__}")
    return HEAD_CLASSES[task](config, device=device, dtype=dtype)


__all__ = [
    "AlbedoHead", "ChannelRMSNorm", "DeconvHeadConfig", "DenseDecoderTrunk", "DenseHeadConfig", "HEAD_CLASSES",
    "HeadConfig", "MattingHead", "NormalHead", "PREDICTOR_NAMES", "PointmapHead", "PointmapHeadConfig",
    "PoseHeatmapHead", "SegHead", "TASKS", "as_head_config", "build_head", "default_head_config",
    "head_config_from_dict", "infer_head_config", "infer_task", "resolve_scale_features", "scale_flatten_features",
]
