"""Training configuration: one dataclass tree, per-task official defaults, YAML files and ``key=value`` overrides.

Official values (facebookresearch/sapiens2 configs, 1024x768): AdamW lr 5e-4 (1e-4 for 5b pose / normal /
pointmap), betas (0.9, 0.999), weight decay 0.1 (0 for biases, norms and 1-D parameters); layer-wise lr decay
0.8 / 0.85 / 0.9 / 0.94 for 0.4b / 0.8b / 1b / 5b; 500 warm-up iterations from 1e-3 x lr, then linear decay
to 0 (``PolynomialLR`` power 1); gradient clipping at norm 2.0 (0.4b) or 4.0 (larger; pointmap 0.8b 2.0);
bf16; batch 1 per GPU; iterations per task and size in ``_NUM_ITERS``. Sizes without an official config
(0.1b, tiny) use the 0.4b values.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingConfigError
from ..models.heads.task_table import TASK_TABLE, task_spec
from ..runtime import parse_precision
from .distill.config import DistillConfig

__all__ = ["OptimConfig", "DataConfig", "TrainConfig", "TRAIN_TASKS", "default_config", "load_config",
           "apply_overrides", "config_to_dict", "arch_size_of"]

TRAIN_TASKS = tuple(spec.name for spec in TASK_TABLE if spec.trainable)

_LAYER_DECAY = {"0.4b": 0.8, "0.8b": 0.85, "1b": 0.9, "5b": 0.94}
_NUM_ITERS = {"pose": {"0.4b": 10000, "0.8b": 10000, "1b": 20000, "5b": 20000},
              "seg": {"0.4b": 20000, "0.8b": 30000, "1b": 20000, "5b": 50000},
              "normal": {"0.4b": 20000, "0.8b": 10000, "1b": 40000, "5b": 40000},
              "pointmap": {"0.4b": 20000, "0.8b": 20000, "1b": 40000, "5b": 40000},
              "albedo": {"0.4b": 20000, "0.8b": 20000, "1b": 40000, "5b": 40000}}


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay_rate: float = 0.8  # 1.0 = off
    warmup_iters: int = 500
    warmup_start_factor: float = 1e-3
    schedule: str = "linear"  # "linear" (official PolynomialLR power 1) or "cosine"
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of the peak lr
    clip_grad: float | None = 2.0  # max global gradient norm; None = no clipping


@dataclass
class DataConfig:
    train: str = ""  # dataset folder (annotations.json + files) or a COCO keypoint JSON for pose
    image_root: str | None = None  # pose COCO JSON: folder the file_name paths are relative to (default: its folder)
    val: str | None = None  # held-out dataset; None with val_fraction > 0 splits ``train`` by image id
    val_fraction: float = 0.0
    input_size: tuple[int, int] = (1024, 768)  # (H, W) of the model input
    batch_size: int = 1  # per process; the global batch is batch_size x world size
    num_workers: int = 4
    augment: bool = True  # the task's official recipe; False = deterministic resize / crop only
    sigma: float | None = None  # pose heatmap sigma; None = 6 at 256x192 heatmaps, scaled with the heatmap
    canonical_focal_length: float | None = None  # pointmap; None = the input width (768 at 1024x768, official)


@dataclass
class TrainConfig:
    task: str = "seg"
    model: str = "sapiens2-pretrain-0.4b"  # an arch name (random init) or a pretrain/task checkpoint (name or path)
    output_dir: str = "runs/train"
    num_iters: int = 20000
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32), bf16, fp16, fp32
    device: str | None = None  # None = cuda / mps / cpu, whichever is there (per local rank under torchrun)
    distributed: str = "ddp"  # ddp or fsdp (FSDP2 fully_shard), used when launched with torchrun
    activation_checkpointing: bool = False
    freeze_backbone: bool = False
    rope_dtype: str = "bf16"
    log_every: int = 10
    eval_every: int = 1000  # 0 = only at the end
    save_every: int = 1000  # 0 = only at the end
    keep_last: int = 3
    logger: str = "csv"  # csv or tensorboard (falls back to csv when tensorboard is not installed)
    progress: bool = True
    eval_batch_size: int = 4
    loss: dict[str, Any] = field(default_factory=dict)  # overrides of the task's LossConfig
    head: dict[str, Any] = field(default_factory=dict)  # head_config overrides (official keys)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)  # sapiens2 distill: soft targets from a teacher


def trainable_task(task: str) -> str:
    """The canonical name of a task (names and aliases as everywhere, the task table's error for others) that
    can be trained; matting cannot (no official training recipe)."""
    spec = task_spec(task)
    if not spec.trainable:
        raise TrainingConfigError(f"unknown training task {spec.name!r}: it has no official training recipe; "
                                  f"trainable tasks: {', '.join(TRAIN_TASKS)}")
    return spec.name


def arch_size_of(model: str) -> str | None:
    """The size tag ("0.4b", "1b", ...) in a model or arch name, or None (e.g. a file path, the tiny arch)."""
    import re
    m = re.search(r"(?<![\d.])(0\.1b|0\.4b|0\.8b|1b|5b)(?![\w.])", Path(str(model)).name.lower())
    return m.group(1) if m else None


def default_config(task: str, model: str = "sapiens2-pretrain-0.4b") -> TrainConfig:
    """The official defaults of ``task`` for the size of ``model`` (0.4b values when the size is unknown)."""
    task = trainable_task(task)
    size = arch_size_of(model)
    key = size if size in _LAYER_DECAY else "0.4b"
    clip = 2.0 if key == "0.4b" or (task == "pointmap" and key == "0.8b") else 4.0
    lr = 1e-4 if key == "5b" and task in ("pose", "normal", "pointmap") else 5e-4
    return TrainConfig(task=task, model=model, num_iters=_NUM_ITERS[task][key],
                       optim=OptimConfig(lr=lr, layer_decay_rate=_LAYER_DECAY[key], clip_grad=clip))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the field's type (tuples from lists, numbers from strings)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        if type(None) in args or annotation is Any:
            return None
        raise TrainingConfigError(f"{where} cannot be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError):
                continue
        raise TrainingConfigError(f"{where}: cannot use {value!r} as {annotation}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise TrainingConfigError(f"{where} needs a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise TrainingConfigError(f"{where} needs a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise TrainingConfigError(f"{where} needs true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise TrainingConfigError(f"{where} needs a number, got {value!r}")
        num = float(value)
        if annotation is int:
            if num != int(num):
                raise TrainingConfigError(f"{where} needs an integer, got {value!r}")
            return int(num)
        return num
    if annotation is str:
        return str(value)
    return value


def _set(obj: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for i, name in enumerate(parts):
        hints = typing.get_type_hints(type(obj))
        if name not in hints:
            hint = difflib.get_close_matches(name, list(hints), n=1)
            raise TrainingConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}"
                             + (f" (did you mean {hint[0]!r}?)" if hint else "")
                             + f"; valid here: {', '.join(sorted(hints))}")
        current = getattr(obj, name)
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(current):
                if not isinstance(value, Mapping):
                    raise TrainingConfigError(f"{dotted} is a section; give a mapping")
                for k, v in value.items():
                    _set(current, k, v)
            elif isinstance(current, dict) and isinstance(value, Mapping):
                current.update(value)
            else:
                setattr(obj, name, _coerce(value, hints[name], dotted))
            return
        if isinstance(current, dict):  # free-form section (loss, head): the rest of the key is one entry
            current[".".join(parts[i + 1:])] = value
            return
        obj = current


def apply_overrides(config: TrainConfig, values: Mapping[str, Any] | Sequence[str]) -> TrainConfig:
    """Apply a nested mapping (from YAML) or ``["optim.lr=1e-4", ...]`` strings (values parsed as YAML)."""
    import yaml
    if isinstance(values, Mapping):
        for key, value in values.items():
            _set(config, str(key), value)
        return config
    for item in values:
        if "=" not in item:
            raise TrainingConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set(config, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return config


def load_config(task: str, model: str | None = None, yaml_file: str | Path | None = None,
                overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults for ``task`` / ``model``, then the YAML file, then ``key=value`` overrides (later wins)."""
    import yaml
    file_values: dict[str, Any] = {}
    if yaml_file is not None:
        path = Path(yaml_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        file_values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(file_values, Mapping):
            raise TrainingConfigError(f"{path} must hold a mapping of config keys")
    model = model or file_values.get("model") or "sapiens2-pretrain-0.4b"
    config = default_config(task, model)
    apply_overrides(config, {k: v for k, v in file_values.items() if k not in ("task", "model")})
    apply_overrides(config, overrides)
    task = trainable_task(task)
    config.task = trainable_task(config.task)
    if "task" in file_values and trainable_task(file_values["task"]) != task:  # a file's task: names or aliases
        raise TrainingConfigError(f"{yaml_file} is a config for task {file_values['task']!r}, not {task!r}")
    if config.task != task:
        raise TrainingConfigError(f"the config is for task {config.task!r}, not {task!r}")
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    trainable_task(config.task)
    # the runtime's precision names (fp16 / float16 / half, ...); its error for others
    if parse_precision(config.precision) == torch.float16 and config.rope_dtype == "bf16":
        raise TrainingConfigError("precision fp16 cannot run the backbone's bfloat16 RoPE (autocast refuses the mix); "
                         "set rope_dtype=fp32, or use precision bf16")
    if config.distributed not in ("ddp", "fsdp"):
        raise TrainingConfigError(f"distributed must be ddp or fsdp, got {config.distributed!r}")
    if config.optim.schedule not in ("linear", "cosine"):
        raise TrainingConfigError(f"optim.schedule must be linear or cosine, got {config.optim.schedule!r}")
    if config.num_iters < 1 or config.data.batch_size < 1:
        raise TrainingConfigError("num_iters and data.batch_size must be >= 1")
    if not 0.0 <= config.data.val_fraction < 1.0:
        raise TrainingConfigError(f"data.val_fraction must be in [0, 1), got {config.data.val_fraction}")
    if config.logger not in ("csv", "tensorboard"):
        raise TrainingConfigError(f"logger must be csv or tensorboard, got {config.logger!r}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A YAML-safe nested dict (tuples as lists) of any config dataclass."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))
