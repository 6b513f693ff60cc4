"""The head config types: the channel layout of a deconv (pose/seg), dense (normal/albedo/matting) or pointmap
head. Pure dataclasses (no torch), so the task table and the head modules can both import them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class DeconvHeadConfig:
    """Pose / seg head: transposed-conv x2 stages, then 1x1 refinement convs, then the predictor conv."""

    in_channels: int
    out_channels: int
    deconv_out_channels: tuple[int, ...]
    deconv_kernel_sizes: tuple[int, ...]
    conv_out_channels: tuple[int, ...]
    conv_kernel_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, "deconv_out_channels", "deconv_kernel_sizes")
        _check_pairs(self, "conv_out_channels", "conv_kernel_sizes")
        for k in self.deconv_kernel_sizes:
            if k not in (2, 3, 4):
                raise ValueError(f"deconv kernel size must be 2, 3 or 4 (official rule), got {k}")


@dataclass(frozen=True)
class DenseHeadConfig:
    """Normal / albedo / matting head: 3x3 input conv, PixelShuffle x2 stages, 3x3 convs, 1x1 predictor."""

    in_channels: int
    out_channels: int
    upsample_channels: tuple[int, ...]
    conv_out_channels: tuple[int, ...]
    conv_kernel_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_pairs(self, "conv_out_channels", "conv_kernel_sizes")


@dataclass(frozen=True)
class PointmapHeadConfig(DenseHeadConfig):
    """The dense trunk to 3 channels plus the scale branch (stride-2 convs, flatten, MLP to 1 value).

    ``scale_in_features`` is the flatten size; it ties the head to one input size. ``None`` means "derive
    it from the model's img_size" (what the defaults do).
    """

    scale_conv_out_channels: tuple[int, ...] = (1536, 512, 128)
    scale_conv_kernel_sizes: tuple[int, ...] = (1, 1, 1)
    scale_hidden_features: tuple[int, ...] = (512, 128)
    scale_in_features: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_pairs(self, "scale_conv_out_channels", "scale_conv_kernel_sizes")
        if not self.scale_conv_out_channels:
            raise ValueError("the pointmap scale branch needs at least one conv")

    @property
    def scale_final_layer(self) -> tuple[int, ...] | None:
        """The official ``scale_final_layer`` tuple (flatten size, hidden..., 1), once the flatten size is known."""
        if self.scale_in_features is None:
            return None
        return (self.scale_in_features, *self.scale_hidden_features, 1)


HeadConfig = Union[DeconvHeadConfig, DenseHeadConfig, PointmapHeadConfig]


def _check_pairs(cfg: Any, channels: str, kernels: str) -> None:
    a, b = getattr(cfg, channels), getattr(cfg, kernels)
    if len(a) != len(b):
        raise ValueError(f"{channels} {tuple(a)} and {kernels} {tuple(b)} must have the same length")


__all__ = ["DeconvHeadConfig", "DenseHeadConfig", "HeadConfig", "PointmapHeadConfig"]
