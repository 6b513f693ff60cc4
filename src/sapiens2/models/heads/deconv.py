"""Pose and seg heads: transposed-conv upsampling, 1x1 refinement convs, a 1x1 predictor conv."""
from __future__ import annotations

import torch
from torch import nn

from .config_types import DeconvHeadConfig
from .layers import NamedPredictor, conv_norm_act_stack, deconv_norm_act_stack, init_head_weights, instance_norm


class DeconvHead(NamedPredictor, nn.Module):
    """The trunk shared by pose and seg, then the predictor conv under the official name each subclass gives in
    ``PREDICTOR_NAME`` (the task table reads it from there)."""

    def __init__(self, config: DeconvHeadConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        fk = {"device": device, "dtype": dtype}
        self.deconv_layers = deconv_norm_act_stack(
            config.in_channels, config.deconv_out_channels, config.deconv_kernel_sizes, **fk)
        c = config.deconv_out_channels[-1] if config.deconv_out_channels else config.in_channels
        self.conv_layers = conv_norm_act_stack(
            c, config.conv_out_channels, config.conv_kernel_sizes, norm=instance_norm, **fk)
        self.feature_channels = config.conv_out_channels[-1] if config.conv_out_channels else c
        self.add_predictor(self.feature_channels, config.out_channels, **fk)
        init_head_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(self.deconv_layers(x))


class PoseHeatmapHead(DeconvHead):
    """308 keypoint heatmaps at 1/4 input resolution (two x2 deconvs on the 1/16 feature map)."""

    PREDICTOR_NAME = "conv_pose"


class SegHead(DeconvHead):
    """Body-part logits at full input resolution (four x2 deconvs; the light seg student has three: half
    resolution, upsampled by every consumer as any logits smaller than the image)."""

    PREDICTOR_NAME = "conv_seg"
