"""Head configurations: the channel layout of every task head, and the official defaults per arch.

The config types are in :mod:`.config_types`; the layouts per task and arch are in the task table
(:mod:`.task_table`), which this module reads.

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
Not official at all: the distillation students (``sapiens2_student_pose`` / ``_seg``) have light pose and seg heads
(task table); their other tasks fall back to the ``"*"`` layouts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..arch import BackboneArch, get_arch
from .config_types import DeconvHeadConfig, DenseHeadConfig, HeadConfig, PointmapHeadConfig
from .task_table import NUM_KEYPOINTS, NUM_SEG_CLASSES, TASK_TABLE, resolve_task, task_names, task_spec

TASKS: tuple[str, ...] = task_names()  # the built-in tasks; code that must see test-added tasks reads TASK_TABLE
CONFIG_CLASS: dict[str, type] = {spec.name: spec.config_class for spec in TASK_TABLE}


def check_task(task: str) -> str:
    """The canonical task name (aliases accepted) or :class:`~sapiens2.errors.UnknownTaskError`."""
    return resolve_task(task)


def default_head_config(task: str, arch: str | BackboneArch) -> HeadConfig:
    """The official head layout of ``task`` for backbone ``arch`` (see the module docstring for sources)."""
    spec = task_spec(task)
    a = get_arch(arch)
    layout = dict(spec.layouts.get(a.name, spec.layouts["*"]))
    if spec.is_deconv:
        n_deconv, n_conv = len(layout["deconv_out_channels"]), len(layout["conv_out_channels"])
        layout.update(deconv_kernel_sizes=(4,) * n_deconv, conv_kernel_sizes=(1,) * n_conv)
    else:
        layout.update(conv_kernel_sizes=(3,) * len(layout["conv_out_channels"]))
    return spec.config_class(in_channels=a.embed_dim, out_channels=spec.out_channels, **layout)


# Official config keys that differ from ours.
_ALIASES = {"num_classes": "out_channels"}


def head_config_from_dict(task: str, values: Mapping[str, Any], base: HeadConfig | None = None) -> HeadConfig:
    """Build a head config from official-style keys, over ``base`` (a default) for keys not given.

    Accepts ``num_classes`` for seg and ``scale_final_layer`` = (flatten size, hidden..., 1) for pointmap.
    """
    spec = task_spec(task)
    task, cls = spec.name, spec.config_class
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
        kwargs.setdefault("out_channels", spec.out_channels)  # fixed per task, not an official config key
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
    spec = task_spec(task)
    task = spec.name
    if config is None:
        return default_head_config(task, arch)
    if isinstance(config, Mapping):
        return head_config_from_dict(task, config, base=default_head_config(task, arch))
    if type(config) is not spec.config_class:
        raise TypeError(f"head_config for {task} must be a {spec.config_class.__name__} or a dict, "
                        f"got {type(config).__name__}")
    return config


__all__ = [
    "CONFIG_CLASS", "DeconvHeadConfig", "DenseHeadConfig", "HeadConfig", "NUM_KEYPOINTS", "NUM_SEG_CLASSES",
    "PointmapHeadConfig", "TASKS", "as_head_config", "check_task", "default_head_config", "head_config_from_dict",
]
