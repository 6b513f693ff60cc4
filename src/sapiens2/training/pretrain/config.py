"""Pretraining configuration: one dataclass tree (views, masks, objective, optimiser), YAML/``key=value`` overridable.

Defaults follow the published recipes where they exist: mask ratio 0.75 and per-patch normalised pixel loss
(MAE / Sapiens), DINO head 2048-256-65536 with student temperature 0.1, teacher 0.04 -> 0.07 and centre momentum
0.9 (DINO/DINOv2), EMA momentum 0.994 -> 1 on a cosine (DINOv2), AdamW weight decay 0.05, gradient clipping 3.0,
warm-up + cosine lr. No layer-wise lr decay (that is a fine-tuning device).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import TrainingConfigError
from ...runtime import parse_precision
from ..config import OptimConfig, config_to_dict
from .masking import MaskSpec
from .model import ObjectiveConfig
from .views import ViewSpec

__all__ = ["PretrainConfig", "pretrain_optim_defaults", "validate_pretrain_config"]


def pretrain_optim_defaults() -> OptimConfig:
    return OptimConfig(lr=5e-4, weight_decay=0.05, betas=(0.9, 0.95), layer_decay_rate=1.0, warmup_iters=1000,
                       warmup_start_factor=1e-3, schedule="cosine", min_lr_ratio=0.01, clip_grad=3.0)


@dataclass
class PretrainConfig:
    data: str = ""  # folder of images, tar shards, a glob or brace range (comma-separated)
    arch: str = "sapiens2_0.4b"
    init: str | None = None  # optional backbone checkpoint (path or published name) to start from
    use_tokenizer: bool = False
    output_dir: str = "runs/pretrain"
    num_steps: int = 100000
    batch_size: int = 8  # per process
    num_workers: int = 4
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32), bf16, fp32
    device: str | None = None
    distributed: str = "ddp"  # ddp or fsdp (FSDP2), used under torchrun
    activation_checkpointing: bool = False
    rope_dtype: str = "bf16"
    layerscale_init: float | None = None  # from scratch: attention LayerScale start (None = official 1e-4)
    log_every: int = 10
    save_every: int = 1000  # 0 = only at the end
    keep_last: int = 3
    logger: str = "csv"
    progress: bool = True
    resume: bool = True  # continue from the newest checkpoint in output_dir if there is one
    collapse_grace_steps: int = 100
    views: ViewSpec = field(default_factory=ViewSpec)
    mask: MaskSpec = field(default_factory=MaskSpec)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=pretrain_optim_defaults)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def validate_pretrain_config(cfg: PretrainConfig) -> None:
    """Raise ValueError naming the first bad setting."""
    if not cfg.data:
        raise TrainingConfigError("no data: set --data to a folder of images or tar shards")
    parse_precision(cfg.precision, allowed=("auto", "bfloat16", "float32"))  # fp16 would need a grad scaler
    if cfg.distributed not in ("ddp", "fsdp"):
        raise TrainingConfigError(f"distributed must be ddp or fsdp, got {cfg.distributed!r}")
    if cfg.num_steps < 1 or cfg.batch_size < 1:
        raise TrainingConfigError("num_steps and batch_size must be >= 1")
    if cfg.optim.schedule not in ("linear", "cosine"):
        raise TrainingConfigError(f"optim.schedule must be linear or cosine, got {cfg.optim.schedule!r}")
    if cfg.logger not in ("csv", "tensorboard"):
        raise TrainingConfigError(f"logger must be csv or tensorboard, got {cfg.logger!r}")
    o = cfg.objective
    if min(o.mae_weight, o.dino_weight, o.ibot_weight) < 0:
        raise TrainingConfigError("loss weights must be >= 0")
    if not 0.0 <= o.momentum_base <= o.momentum_final <= 1.0:
        raise TrainingConfigError("EMA momentum must satisfy 0 <= momentum_base <= momentum_final <= 1")
    cfg.views.validate()
    cfg.mask.validate()
