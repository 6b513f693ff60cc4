"""Head configurations: the channel layout of every task head, and the official defaults per arch.

Field names follow the official config keys (``deconv_out_channels``, ``upsample_channels``, ...), so an
official ``decode_head=dict(...)`` (minus ``type`` and losses) converts with :func:`head_config_from_dict`.

Where the defaults come from (official ``configs/`` of facebookresearch/sapiens2, 1024x768):
- pose 0.4b/0.8b/5b deconv (1024, 768) + conv (512, 512, 256); pose 1b deconv (1536, 1024) + conv (768, 512, 256).
- seg, every size: deconv (512, 256, 128, 64) + conv (64, 64), 29 classes.
- normal 0.4b/0.8b/1b upsample (768, 512, 256, 128) + conv (64, 32, 16); 5b (1536, 768, 512, 256) + (128, 64, 32).
- albedo 0.4b/0.8b/1b as normal; 5b upsample (1536, 768, 512, 256) + conv (64, 32, 16).
- pointmap 0.4b/0.8b/1b upsample (1536, 768, 512, 256) + conv (64, 32, 16); 5b (1536, 768, 768, 768) +
  (128, 64, 32); scale branch convs (1536, 512, 128), MLP (flatten, 512, 128, 1) for every size.
- matting 1b (the only official size): the normal 1b layout with 4 outputs.
Derived, not official (no task config published): 0.1b uses the 0.4b layouts; matting at other sizes uses
that size's normal layout; ``sapiens2_tiny`` uses the official numerics fixture's head configs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from ..arch import BackboneArch, get_arch

TASKS: tuple[str, ...] = ("pose", "seg", "normal", "pointmap", "albedo", "matting")

NUM_KEYPOINTS = 308
NUM_SEG_CLASSES = 29


def check_task(task: str) -> str:
    """Return the canonical task name or raise a ValueError naming the known ones."""
    key = str(task).strip().lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return key


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

CONFIG_CLASS: dict[str, type] = {
    "pose": DeconvHeadConfig,
    "seg": DeconvHeadConfig,
    "normal": DenseHeadConfig,
    "albedo": DenseHeadConfig,
    "matting": DenseHeadConfig,
    "pointmap": PointmapHeadConfig,
}


def _check_pairs(cfg: Any, channels: str, kernels: str) -> None:
    a, b = getattr(cfg, channels), getattr(cfg, kernels)
    if len(a) != len(b):
        raise ValueError(f"{channels} {tuple(a)} and {kernels} {tuple(b)} must have the same length")


# -- official layouts (everything but in_channels, which is the backbone width) -------------------------
_POSE_SMALL = dict(deconv_out_channels=(1024, 768), conv_out_channels=(512, 512, 256))
_POSE_1B = dict(deconv_out_channels=(1536, 1024), conv_out_channels=(768, 512, 256))
_SEG = dict(deconv_out_channels=(512, 256, 128, 64), conv_out_channels=(64, 64))
_DENSE_1K = dict(upsample_channels=(768, 512, 256, 128), conv_out_channels=(64, 32, 16))
_NORMAL_5B = dict(upsample_channels=(1536, 768, 512, 256), conv_out_channels=(128, 64, 32))
_ALBEDO_5B = dict(upsample_channels=(1536, 768, 512, 256), conv_out_channels=(64, 32, 16))
_POINTMAP = dict(upsample_channels=(1536, 768, 512, 256), conv_out_channels=(64, 32, 16))
_POINTMAP_5B = dict(upsample_channels=(1536, 768, 768, 768), conv_out_channels=(128, 64, 32))

# The numerics fixture's tiny heads (tests/data/official/cases.json).
_TINY_DECONV_POSE = dict(deconv_out_channels=(32, 32), conv_out_channels=(32, 32, 16))
_TINY_DECONV_SEG = dict(deconv_out_channels=(32, 16, 16, 16), conv_out_channels=(16, 16))
_TINY_DENSE = dict(upsample_channels=(32, 16, 16, 16), conv_out_channels=(16, 8, 8))
_TINY_SCALE = dict(scale_conv_out_channels=(32, 16, 8), scale_hidden_features=(16, 8))

_LAYOUTS: dict[str, dict[str, dict[str, Any]]] = {
    "pose": {"sapiens2_tiny": _TINY_DECONV_POSE, "sapiens2_1b": _POSE_1B, "*": _POSE_SMALL},
    "seg": {"sapiens2_tiny": _TINY_DECONV_SEG, "*": _SEG},
    "normal": {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _NORMAL_5B, "*": _DENSE_1K},
    "albedo": {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _ALBEDO_5B, "*": _DENSE_1K},
    "matting": {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _NORMAL_5B, "*": _DENSE_1K},
    "pointmap": {"sapiens2_tiny": {**_TINY_DENSE, **_TINY_SCALE}, "sapiens2_5b": _POINTMAP_5B, "*": _POINTMAP},
}

_OUT_CHANNELS = {"pose": NUM_KEYPOINTS, "seg": NUM_SEG_CLASSES, "normal": 3, "albedo": 3, "pointmap": 3,
                 "matting": 4}


def default_head_config(task: str, arch: str | BackboneArch) -> HeadConfig:
    """The official head layout of ``task`` for backbone ``arch`` (see the module docstring for sources)."""
    task = check_task(task)
    a = get_arch(arch)
    layout = dict(_LAYOUTS[task].get(a.name, _LAYOUTS[task]["*"]))
    if task in ("pose", "seg"):
        n_deconv, n_conv = len(layout["deconv_out_channels"]), len(layout["conv_out_channels"])
        layout.update(deconv_kernel_sizes=(4,) * n_deconv, conv_kernel_sizes=(1,) * n_conv)
    else:
        layout.update(conv_kernel_sizes=(3,) * len(layout["conv_out_channels"]))
    return CONFIG_CLASS[task](in_channels=a.embed_dim, out_channels=_OUT_CHANNELS[task], **layout)


# Official config keys that differ from ours.
_ALIASES = {"num_classes": "out_channels"}


def head_config_from_dict(task: str, values: Mapping[str, Any], base: HeadConfig | None = None) -> HeadConfig:
    """Build a head config from official-style keys, over ``base`` (a default) for keys not given.

    Accepts ``num_classes`` for seg and ``scale_final_layer`` = (flatten size, hidden..., 1) for pointmap.
    """
    task = check_task(task)
    cls = CONFIG_CLASS[task]
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "type":
            continue
        if key == "scale_final_layer" and cls is PointmapHeadConfig:
            layers = tuple(int(v) for v in value)
            if len(layers) < 2 or layers[-1] != 1:
                raise ValueError(f"scale_final_layer must be (flatten size, hidden..., 1), got {layers}")
            kwargs["scale_in_features"] = layers[0]
            kwargs["scale_hidden_features"] = layers[1:-1]
            continue
        name = _ALIASES.get(key, key)
        if name not in known:
            raise ValueError(f"unknown {task} head config key {key!r}; known: {', '.join(sorted(known))}")
        kwargs[name] = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else value
    if base is None:
        kwargs.setdefault("out_channels", _OUT_CHANNELS[task])  # fixed per task, not an official config key
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in kwargs and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{task} head config is missing {', '.join(missing)}")
        return cls(**kwargs)
    if not isinstance(base, cls):
        raise TypeError(f"base config for {task} must be a {cls.__name__}, got {type(base).__name__}")
    return dataclasses.replace(base, **kwargs)


def as_head_config(task: str, config: HeadConfig | Mapping[str, Any] | None, arch: str | BackboneArch) -> HeadConfig:
    """Normalise a ``head_config`` argument: None -> the default, a mapping -> overrides of the default."""
    task = check_task(task)
    if config is None:
        return default_head_config(task, arch)
    if isinstance(config, Mapping):
        return head_config_from_dict(task, config, base=default_head_config(task, arch))
    if type(config) is not CONFIG_CLASS[task]:
        raise TypeError(f"head_config for {task} must be a {CONFIG_CLASS[task].__name__} or a dict, "
                        f"got {type(config).__name__}")
    return config


__all__ = [
    "CONFIG_CLASS", "DeconvHeadConfig", "DenseHeadConfig", "HeadConfig", "NUM_KEYPOINTS", "NUM_SEG_CLASSES",
    "PointmapHeadConfig", "TASKS", "as_head_config", "check_task", "default_head_config", "head_config_from_dict",
]
