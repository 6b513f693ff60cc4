"""The PixelShuffle dense decoder shared by normal, albedo, matting and pointmap, and the thin task heads."""
from __future__ import annotations

import torch
from torch import nn

from .config_types import DenseHeadConfig
from .layers import (NamedPredictor, NormFactory, channel_rms_norm, conv_norm_act_stack, init_head_weights,
                     instance_norm)


class DenseDecoderTrunk(nn.Module):
    """3x3 input conv, x2 PixelShuffle stages (3x3 conv to 4x channels first), then 3x3 convs.

    Each conv is followed by ``norm`` and SiLU. The modules sit directly on the head (not in a child
    module) because the official keys are ``decode_head.input_conv.0.*``, ``decode_head.upsample_blocks.N.0.*``
    and ``decode_head.conv_layers.{0,3,6}.*``; task heads subclass this and add their predictor conv.
    """

    def __init__(self, config: DenseHeadConfig, norm: NormFactory = instance_norm, device=None, dtype=None):
        super().__init__()
        self.config = config
        fk = {"device": device, "dtype": dtype}
        c = config.in_channels
        self.input_conv = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, **fk), norm(c, **fk), nn.SiLU(inplace=True))
        stages = []
        for out_c in config.upsample_channels:
            stages.append(nn.Sequential(
                nn.Conv2d(c, out_c * 4, 3, padding=1, **fk),
                nn.PixelShuffle(2),
                norm(out_c, **fk),
                nn.SiLU(inplace=True),
            ))
            c = out_c
        self.upsample_blocks = nn.Sequential(*stages)
        self.conv_layers = conv_norm_act_stack(c, config.conv_out_channels, config.conv_kernel_sizes, norm=norm, **fk)
        self.feature_channels = config.conv_out_channels[-1] if config.conv_out_channels else c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(self.upsample_blocks(self.input_conv(x)))


class DenseTaskHead(NamedPredictor, DenseDecoderTrunk):
    """The dense trunk, then a 1x1 predictor conv under the official name the subclass gives in
    ``PREDICTOR_NAME`` (the task table reads it from there), with the subclass's ``norm``."""

    norm: NormFactory = staticmethod(instance_norm)

    def __init__(self, config: DenseHeadConfig, device=None, dtype=None):
        super().__init__(config, norm=self.norm, device=device, dtype=dtype)
        self.add_predictor(self.feature_channels, config.out_channels, device=device, dtype=dtype)
        init_head_weights(self)


class NormalHead(DenseTaskHead):
    """Surface normals, raw (not unit-normalised) 3 channels at full resolution."""

    PREDICTOR_NAME = "conv_normal"


class AlbedoHead(DenseTaskHead):
    """Albedo, 3 channels; the only head whose norms are per-pixel channel RMSNorms with weights."""

    PREDICTOR_NAME = "conv_albedo"
    norm = staticmethod(channel_rms_norm)


class MattingHead(DenseTaskHead):
    """Premultiplied RGB foreground + alpha, squashed to [0, 1] by a sigmoid inside the head."""

    PREDICTOR_NAME = "conv_matting"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))
