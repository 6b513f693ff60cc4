"""Pointmap head: the dense trunk to XYZ, plus a scale branch that regresses one value per image."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...errors import InputSizeError
from .config_types import PointmapHeadConfig
from .dense import DenseDecoderTrunk
from .layers import NamedPredictor, conv_norm_act_stack, init_head_weights, instance_norm


def scale_branch_grid(config: PointmapHeadConfig, grid_h: int, grid_w: int) -> tuple[int, int]:
    """Spatial size after the stride-2 scale convs for a (grid_h, grid_w) backbone feature map."""
    return _scale_branch_grids(config, grid_h, grid_w)[-1]


def _scale_branch_grids(config: PointmapHeadConfig, grid_h: int, grid_w: int) -> list[tuple[int, int]]:
    h, w = grid_h, grid_w
    grids = []
    for k in config.scale_conv_kernel_sizes:
        pad = (k - 1) // 2
        h = (h + 2 * pad - k) // 2 + 1
        w = (w + 2 * pad - k) // 2 + 1
        grids.append((h, w))
    return grids or [(h, w)]


def check_scale_branch_fits(config: PointmapHeadConfig, grid_h: int, grid_w: int) -> None:
    """Each scale conv is followed by InstanceNorm, which needs more than one spatial element."""
    if any(h * w < 2 for h, w in _scale_branch_grids(config, grid_h, grid_w)):
        raise InputSizeError(
            f"a {grid_h}x{grid_w} feature grid is too small for the pointmap scale branch "
            f"({len(config.scale_conv_kernel_sizes)} stride-2 convs, each followed by InstanceNorm); "
            f"use an input of at least 256x192")


def scale_flatten_features(config: PointmapHeadConfig, grid_h: int, grid_w: int) -> int:
    """The scale MLP's input size (channels x cells after the convs) for a feature map of that grid."""
    h, w = scale_branch_grid(config, grid_h, grid_w)
    return config.scale_conv_out_channels[-1] * h * w


def resolve_scale_features(config: PointmapHeadConfig, grid_h: int, grid_w: int) -> PointmapHeadConfig:
    """Fill in ``scale_in_features`` from the feature grid, or check a given one against it."""
    check_scale_branch_fits(config, grid_h, grid_w)
    needed = scale_flatten_features(config, grid_h, grid_w)
    if config.scale_in_features is None:
        return dataclasses.replace(config, scale_in_features=needed)
    if config.scale_in_features != needed:
        raise ValueError(
            f"pointmap scale branch expects {config.scale_in_features} flattened features, but a "
            f"{grid_h}x{grid_w} feature grid gives {needed}; build the model with the img_size it was "
            f"trained at (see sapiens2.models.task_model.infer_img_size)")
    return config


class PointmapHead(NamedPredictor, DenseDecoderTrunk):
    """Returns ``(pointmap, scale)``: XYZ at full resolution (B, 3, H, W) and (B, 1); metric = pointmap / scale.

    The scale branch reads the raw backbone feature map. Its Linear input size is fixed by
    ``config.scale_in_features``, so the head only runs on inputs whose feature grid gives that size.
    """

    PREDICTOR_NAME = "conv_pointmap"

    def __init__(self, config: PointmapHeadConfig, device=None, dtype=None):
        if config.scale_in_features is None:
            raise ValueError("PointmapHead needs config.scale_in_features; use resolve_scale_features() "
                             "with the backbone's feature grid first")
        super().__init__(config, norm=instance_norm, device=device, dtype=dtype)
        fk = {"device": device, "dtype": dtype}
        self.scale_conv_layers = conv_norm_act_stack(
            config.in_channels, config.scale_conv_out_channels, config.scale_conv_kernel_sizes,
            norm=instance_norm, stride=2, **fk)
        mlp: list[nn.Module] = [nn.Flatten()]
        sizes = config.scale_final_layer
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            mlp.append(nn.Linear(n_in, n_out, **fk))
            if i < len(sizes) - 2:  # the last Linear is the raw scale: no activation
                mlp.append(nn.SiLU())
        self.scale_final_layer = nn.Sequential(*mlp)
        # Registered last, as in the official module, so state-dict key order matches too.
        self.add_predictor(self.feature_channels, config.out_channels, **fk)
        init_head_weights(self)

    def check_feature_grid(self, grid_h: int, grid_w: int, image_hw: tuple[int, int] | None = None) -> None:
        """Raise InputSizeError if a feature map of this grid cannot feed the scale MLP."""
        got = scale_flatten_features(self.config, grid_h, grid_w)
        if got != self.config.scale_in_features:
            where = f"input {image_hw[0]}x{image_hw[1]}" if image_hw else f"feature grid {grid_h}x{grid_w}"
            raise InputSizeError(
                f"the pointmap scale branch is tied to its training size: {where} gives {got} flattened "
                f"features, the checkpoint expects {self.config.scale_in_features}; resize or pad the input to "
                f"the model's img_size")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_feature_grid(x.shape[-2], x.shape[-1])
        pointmap = self.predictor(self.features(x))
        scale = self.scale_final_layer(self.scale_conv_layers(x))
        return pointmap, scale
