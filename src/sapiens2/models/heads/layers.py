"""Building blocks shared by the task heads, laid out so state-dict keys match the official Sequentials."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..norm import RMSNorm

HEAD_RMS_NORM_EPS = 1e-6

NormFactory = Callable[..., nn.Module]


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channels of each pixel, with a weight (official ``RMSNorm2d``, used by albedo).

    The inner ``norm`` attribute keeps the official key name (``...norm.weight``).
    """

    def __init__(self, num_channels: int, eps: float = HEAD_RMS_NORM_EPS, device=None, dtype=None):
        super().__init__()
        self.norm = RMSNorm(num_channels, eps=eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last so nn.RMSNorm reduces over C, exactly as the official module does.
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def instance_norm(num_channels: int, device=None, dtype=None) -> nn.Module:
    """InstanceNorm2d with PyTorch defaults: no affine, no running stats, eps 1e-5 (no state-dict entries)."""
    return nn.InstanceNorm2d(num_channels)


def channel_rms_norm(num_channels: int, device=None, dtype=None) -> nn.Module:
    return ChannelRMSNorm(num_channels, device=device, dtype=dtype)


def deconv_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 transposed conv exactly double the size (official rule)."""
    rules = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    if kernel_size not in rules:
        raise ValueError(f"deconv kernel size must be 2, 3 or 4, got {kernel_size}")
    return rules[kernel_size]


def conv_norm_act_stack(in_channels: int, out_channels: tuple[int, ...], kernel_sizes: tuple[int, ...],
                        norm: NormFactory, stride: int = 1, device=None, dtype=None) -> nn.Sequential:
    """[Conv2d(bias) -> norm -> SiLU] per entry, as one flat Sequential (keys ``0``, ``3``, ``6``, ...)."""
    layers: list[nn.Module] = []
    c = in_channels
    for out_c, k in zip(out_channels, kernel_sizes):
        layers += [
            nn.Conv2d(c, out_c, k, stride=stride, padding=(k - 1) // 2, device=device, dtype=dtype),
            norm(out_c, device=device, dtype=dtype),
            nn.SiLU(inplace=True),
        ]
        c = out_c
    return nn.Sequential(*layers)


def deconv_norm_act_stack(in_channels: int, out_channels: tuple[int, ...], kernel_sizes: tuple[int, ...],
                          device=None, dtype=None) -> nn.Sequential:
    """[ConvTranspose2d(stride 2, no bias) -> InstanceNorm -> SiLU] per entry, one flat Sequential."""
    layers: list[nn.Module] = []
    c = in_channels
    for out_c, k in zip(out_channels, kernel_sizes):
        pad, out_pad = deconv_padding(k)
        layers += [
            nn.ConvTranspose2d(c, out_c, k, stride=2, padding=pad, output_padding=out_pad, bias=False,
                               device=device, dtype=dtype),
            instance_norm(out_c),
            nn.SiLU(inplace=True),
        ]
        c = out_c
    return nn.Sequential(*layers)


def init_head_weights(module: nn.Module) -> None:
    """Random init for training from scratch (Kaiming like the official heads); skips meta tensors."""
    with torch.no_grad():
        for m in module.modules():
            weight = getattr(m, "weight", None)
            if weight is None or weight.is_meta:
                continue
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")
            elif isinstance(m, nn.RMSNorm):
                nn.init.ones_(weight)
            bias = getattr(m, "bias", None)
            if bias is not None and not bias.is_meta:
                nn.init.zeros_(bias)


class NamedPredictor:
    """Mixin of the task heads: the final 1x1 conv, registered under the official name the head class gives in
    ``PREDICTOR_NAME`` (the task table reads the name from there), and ``forward = predictor(features(x))``."""

    PREDICTOR_NAME: str

    def add_predictor(self, in_channels: int, out_channels: int, device=None, dtype=None) -> None:
        self.add_module(self.PREDICTOR_NAME, nn.Conv2d(in_channels, out_channels, 1, device=device, dtype=dtype))

    @property
    def predictor(self) -> nn.Conv2d:
        return getattr(self, self.PREDICTOR_NAME)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.features(x))
