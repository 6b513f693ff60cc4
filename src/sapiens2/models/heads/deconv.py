"""Pose and seg heads: transposed-conv upsampling, 1x1 refinement convs, a 1x1 predictor conv."""
from __future__ import annotations

import torch
from torch import nn

from .config_types import DeconvHeadConfig
from .layers import conv_norm_act_stack, deconv_norm_act_stack, init_head_weights, instance_norm


class DeconvHead(nn.Module):
    """The trunk shared by pose and seg; subclasses add the predictor under its official name."""

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

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(self.deconv_layers(x))


class PoseHeatmapHead(DeconvHead):
    """308 keypoint heatmaps at 1/4 input resolution (two x2 deconvs on the 1/16 feature map)."""

    def __init__(self, config: DeconvHeadConfig, device=None, dtype=None):
        super().__init__(config, device=device, dtype=dtype)
        self.conv_pose = nn.Conv2d(self.feature_channels, config.out_channels, 1, device=device, dtype=dtype)
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pose(self.features(x))


class SegHead(DeconvHead):
    """Body-part logits at full input resolution (four x2 deconvs)."""

    def __init__(self, config: DeconvHeadConfig, device=None, dtype=None):
        super().__init__(config, device=device, dtype=dtype)
        self.conv_seg = nn.Conv2d(self.feature_channels, config.out_channels, 1, device=device, dtype=dtype)
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.features(x))
