"""The PixelShuffle dense decoder shared by normal, albedo, matting and pointmap, and the thin task heads."""
from __future__ import annotations

import torch
from torch import nn

from .config_types import DenseHeadConfig
from .layers import NormFactory, channel_rms_norm, conv_norm_act_stack, init_head_weights, instance_norm


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


class NormalHead(DenseDecoderTrunk):
    """Surface normals, raw (not unit-normalised) 3 channels at full resolution."""

    def __init__(self, config: DenseHeadConfig, device=None, dtype=None):
        super().__init__(config, norm=instance_norm, device=device, dtype=dtype)
        self.conv_normal = nn.Conv2d(self.feature_channels, config.out_channels, 1, device=device, dtype=dtype)
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_normal(self.features(x))


class AlbedoHead(DenseDecoderTrunk):
    """Albedo, 3 channels; the only head whose norms are per-pixel channel RMSNorms with weights."""

    def __init__(self, config: DenseHeadConfig, device=None, dtype=None):
        super().__init__(config, norm=channel_rms_norm, device=device, dtype=dtype)
        self.conv_albedo = nn.Conv2d(self.feature_channels, config.out_channels, 1, device=device, dtype=dtype)
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_albedo(self.features(x))


class MattingHead(DenseDecoderTrunk):
    """Premultiplied RGB foreground + alpha, squashed to [0, 1] by a sigmoid inside the head."""

    def __init__(self, config: DenseHeadConfig, device=None, dtype=None):
        super().__init__(config, norm=instance_norm, device=device, dtype=dtype)
        self.conv_matting = nn.Conv2d(self.feature_channels, config.out_channels, 1, device=device, dtype=dtype)
        init_head_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_matting(self.features(x)))
