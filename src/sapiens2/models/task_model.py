"""Task models: the backbone plus one task head, with the official ``backbone.*`` / ``decode_head.*`` keys."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ArchMismatchError, CheckpointError
from .arch import BackboneArch, get_arch
from .backbone import Sapiens2Backbone, build_backbone
from .heads import (TASKS, HeadConfig, PointmapHeadConfig, as_head_config, build_head, check_task, infer_head_config,
                    infer_task, resolve_scale_features, scale_flatten_features)

DEFAULT_IMG_SIZE = (1024, 768)


class Sapiens2TaskModel(nn.Module):
    """Backbone -> feature map (B, C, H/16, W/16) -> ``decode_head``.

    Outputs, for a normalised (B, 3, H, W) batch: pose heatmaps (B, 308, H/4, W/4); seg logits (B, 29, H, W);
    normal / albedo raw (B, 3, H, W); matting (B, 4, H, W) in [0, 1] (premultiplied RGB + alpha); pointmap the
    tuple ``(pointmap (B, 3, H, W), scale (B, 1))``.
    """

    def __init__(self, task: str, backbone: Sapiens2Backbone, decode_head: nn.Module):
        super().__init__()
        self.task = check_task(task)
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def head_config(self) -> HeadConfig:
        return self.decode_head.config

    @property
    def img_size(self) -> tuple[int, int]:
        return self.backbone.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.decode_head, "check_feature_grid"):  # pointmap: fail before the expensive backbone pass
            grid = self.backbone.grid_size(x.shape[-2], x.shape[-1])
            self.decode_head.check_feature_grid(*grid, image_hw=(x.shape[-2], x.shape[-1]))
        return self.decode_head(self.backbone(x))

    def extra_repr(self) -> str:
        return f"task={self.task}"


def build_model(task: str, arch: str | BackboneArch, img_size: tuple[int, int] | None = None,
                head_config: HeadConfig | Mapping[str, Any] | None = None, use_tokenizer: bool = False,
                rope_dtype: str | torch.dtype = "bf16", device=None, dtype=None) -> Sapiens2TaskModel:
    """Build a task model (random weights; ``device="meta"`` allocates nothing).

    ``head_config``: None for the official layout of ``task`` at ``arch``; a HeadConfig (e.g. from
    :func:`infer_head_config`); or a dict of official config keys overriding the default. For pointmap, the
    scale MLP's input size follows ``img_size`` unless the config fixes it, in which case they must agree.
    """
    task = check_task(task)
    a = get_arch(arch)
    if img_size is None:  # the arch's own size (the distillation students), else the official 1024x768
        img_size = a.input_size or DEFAULT_IMG_SIZE
    config = as_head_config(task, head_config, a)
    if config.in_channels != a.embed_dim:
        raise ArchMismatchError(
            f"the {task} head takes {config.in_channels} input channels but {a.name} produces {a.embed_dim}; "
            f"the head belongs to another backbone size")
    backbone = build_backbone(a, img_size=img_size, use_tokenizer=use_tokenizer, rope_dtype=rope_dtype,
                              device=device, dtype=dtype)
    if isinstance(config, PointmapHeadConfig):
        config = resolve_scale_features(config, *backbone.grid_size(*backbone.img_size))
    head = build_head(task, config, device=device, dtype=dtype)
    return Sapiens2TaskModel(task, backbone, head)


def build_model_for_state_dict(state_dict: Mapping[str, Any], arch: str | BackboneArch, task: str | None = None,
                               img_size: tuple[int, int] | None = None, use_tokenizer: bool = False,
                               rope_dtype: str | torch.dtype = "bf16", device=None, dtype=None) -> Sapiens2TaskModel:
    """An empty task model whose keys and shapes fit an official-layout task ``state_dict`` (weights not loaded).

    The task and head layout come from the ``decode_head.*`` shapes; ``task``, if given, must agree. With
    ``img_size=None`` the size is 1024x768, or for pointmap the size its scale MLP was trained at.
    """
    found = infer_task(state_dict)
    if task is not None and check_task(task) != found:
        raise CheckpointError(f"the checkpoint holds a {found} head, not a {check_task(task)} head")
    config = infer_head_config(found, state_dict)
    if img_size is None:
        img_size = infer_img_size(found, config, default=get_arch(arch).input_size or DEFAULT_IMG_SIZE,
                                  use_tokenizer=use_tokenizer)
    return build_model(found, arch, img_size=img_size, head_config=config, use_tokenizer=use_tokenizer,
                       rope_dtype=rope_dtype, device=device, dtype=dtype)


def infer_img_size(task: str, head_config: HeadConfig, default: tuple[int, int] = DEFAULT_IMG_SIZE,
                   use_tokenizer: bool = False) -> tuple[int, int]:
    """The img_size to build ``task`` with, so that a pointmap head's scale MLP fits.

    Returns ``default`` unless it is a pointmap config whose ``scale_in_features`` needs another size; then the
    largest image of ``default``'s aspect ratio that gives that many features (1024x768 for the official 6144),
    or, failing that, a size built from a factorisation of the cell count. Other tasks run at any size.
    """
    task = check_task(task)
    if not isinstance(head_config, PointmapHeadConfig) or head_config.scale_in_features is None:
        return tuple(default)
    multiple = 16 * (4 if use_tokenizer else 1)
    want = head_config.scale_in_features
    dh, dw = default
    if dh % multiple == 0 and dw % multiple == 0 and scale_flatten_features(
            head_config, dh // multiple, dw // multiple) == want:
        return tuple(default)
    channels = head_config.scale_conv_out_channels[-1]
    if want % channels:
        raise CheckpointError(f"pointmap scale MLP input {want} is not a multiple of the last scale conv's "
                              f"{channels} channels; the head cannot fit any input size")
    cells = want // channels
    down = 2 ** len(head_config.scale_conv_out_channels)
    best = None
    for gh in range(1, cells * down + 1):  # grid heights whose scale branch can give at most `cells` rows
        gw = max(1, round(gh * dw / dh))
        if scale_flatten_features(head_config, gh, gw) == want:
            best = (gh, gw)
    if best is None:  # no size of the default aspect fits: take the most square-like factorisation
        pairs = [(r, cells // r) for r in range(1, cells + 1) if cells % r == 0]
        r, c = min(pairs, key=lambda p: (abs(p[0] / p[1] - dh / dw), -p[0]))
        best = (r * down, c * down)
        if scale_flatten_features(head_config, *best) != want:
            raise CheckpointError(f"no input size gives the pointmap scale MLP's {want} input features")
    return best[0] * multiple, best[1] * multiple


__all__ = ["DEFAULT_IMG_SIZE", "TASKS", "Sapiens2TaskModel", "build_model", "build_model_for_state_dict",
           "infer_head_config", "infer_img_size", "infer_task"]
