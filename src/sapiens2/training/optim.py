"""AdamW with layer-wise learning-rate decay, and the warm-up + decay schedule.

Layer ids follow the official runner: tokens, patch embedding and tokenizer are layer 0, ``blocks.i`` is layer
i + 1, everything else (final norm, decode head) the top layer L + 1 (L = depth); the lr of layer l is
``lr * rate ** (L + 1 - l)``. Biases, norms and other 1-D parameters get no weight decay.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import TrainingConfigError
from .config import OptimConfig

__all__ = ["layer_id", "param_groups", "build_optimizer", "lr_factor", "build_scheduler"]

_BOTTOM = ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed", "backbone.storage_tokens")


def layer_id(name: str, depth: int) -> int:
    """Layer index of a parameter name (official-key task model), 0 .. depth + 1."""
    for prefix in ("module.", "_orig_mod."):  # DDP / torch.compile wrappers
        name = name.replace(prefix, "")
    if name in _BOTTOM or name.startswith(("backbone.patch_embed", "backbone.tokenizer")):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], depth: int, lr: float, weight_decay: float,
                 layer_decay_rate: float) -> list[dict]:
    """Parameter groups, one per (lr, weight decay) pair; frozen parameters are left out."""
    groups: dict[tuple[float, float], dict] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name
        wd = 0.0 if no_decay else weight_decay
        scale = layer_decay_rate ** (depth + 1 - layer_id(name, depth))
        key = (lr * scale, wd)
        group = groups.setdefault(key, {"params": [], "names": [], "lr": key[0], "weight_decay": wd,
                                        "layer_scale": scale})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, config: OptimConfig, depth: int) -> torch.optim.AdamW:
    groups = param_groups(model.named_parameters(), depth, config.lr, config.weight_decay, config.layer_decay_rate)
    if not groups:
        raise TrainingConfigError("no trainable parameters (is everything frozen?)")
    for g in groups:
        g.pop("names")
    # foreach: one fused kernel per group instead of one per tensor (the default picks it only on CUDA).
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
                             foreach=True)


def lr_factor(step: int, total: int, config: OptimConfig) -> float:
    """Multiplier of the peak lr at ``step`` (0-based): linear warm-up from ``warmup_start_factor``, then linear
    (official) or cosine decay to ``min_lr_ratio`` at ``total``."""
    warm = min(config.warmup_iters, total)
    if step < warm:
        s = config.warmup_start_factor
        return s + (1.0 - s) * step / warm
    span = max(1, total - warm)
    progress = min(1.0, (step - warm) / span)
    if config.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, total: int, config: OptimConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, config))
