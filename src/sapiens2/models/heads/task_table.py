"""The task table: one frozen :class:`TaskSpec` per task, the single place that lists the tasks.

Every layer that used to keep its own list of tasks (heads, checkpoint registry and converter, Predictor, CLI,
training config) loops over :data:`TASK_TABLE` or calls :func:`resolve_task`, so names, aliases, head layout,
final-conv name and output channels are written once, here.

Why here (the models layer) and not higher: the entry names the head config class, which Predictor, the
checkpoint code and training all need, and an import may only point down. What belongs to higher layers
(losses in ``training``, metrics in ``evaluation``, output files in ``serving``) sits in typed tables in those
layers keyed by the task name; each holds exactly one entry per task here (tests/test_task_table.py checks),
so nothing below imports upward and there is no string registry of callables.

Tests (or a fork) add a task by extending ``TASK_TABLE``; lookups read it at call time.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import UnknownTaskError
from .config_types import DeconvHeadConfig, DenseHeadConfig, PointmapHeadConfig
from .deconv import PoseHeatmapHead, SegHead
from .dense import AlbedoHead, MattingHead, NormalHead
from .pointmap import PointmapHead

NUM_KEYPOINTS = 308
NUM_SEG_CLASSES = 29


@dataclass(frozen=True)
class TaskSpec:
    """What the lower layers know of one task.

    layouts: the official head layout per backbone arch name (``"*"`` = every other arch), everything but
    ``in_channels`` (the backbone width) and the kernel sizes (fixed per head kind).
    published: whether official checkpoints exist (albedo ships configs but no weights).
    trainable: whether ``sapiens2 train`` supports it (matting: no official training recipe).
    """

    name: str
    config_class: type
    head_class: type  # an nn.Module built as head_class(config, device=, dtype=); names its final conv
    out_channels: int
    layouts: Mapping[str, Mapping[str, Any]]
    aliases: tuple[str, ...] = ()
    published: bool = True
    trainable: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)  # free for a test's or fork's own task

    @property
    def predictor_name(self) -> str:
        """The head's final conv as official checkpoints name it (``decode_head.<name>.weight``), from the head
        class, the one place it is written."""
        return self.head_class.PREDICTOR_NAME

    @property
    def is_deconv(self) -> bool:
        return issubclass(self.config_class, DeconvHeadConfig)


# -- official layouts (see models/heads/config.py's docstring for where they come from) ----------------------
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
# Distillation students (models/arch.py): light heads, no extra convs beyond one (measured, benchmarks/student.py).
# The seg student's logits are at half the input resolution (three x2 deconvs, not four): the fourth deconv at full
# resolution cost 3x the rest of the model on the CPU (4.4 -> 14.5 images per CPU second at 512x384); every consumer
# (predict, eval, the losses) upsamples logits to the labels' or image's size bilinearly, as it does for any seg model.
_STUDENT_POSE = dict(deconv_out_channels=(64, 64), conv_out_channels=(64,))
_STUDENT_SEG = dict(deconv_out_channels=(64, 32, 16), conv_out_channels=(16,))
_STUDENTS_POSE = {"sapiens2_student_pose": _STUDENT_POSE, "sapiens2_student_seg": _STUDENT_POSE}
_STUDENTS_SEG = {"sapiens2_student_pose": _STUDENT_SEG, "sapiens2_student_seg": _STUDENT_SEG}

# The canonical order (output files, listings). Predictor runs seg first (its masks feed pose boxes).
TASK_TABLE: tuple[TaskSpec, ...] = (
    TaskSpec("pose", DeconvHeadConfig, PoseHeatmapHead, NUM_KEYPOINTS,
             {"sapiens2_tiny": _TINY_DECONV_POSE, "sapiens2_1b": _POSE_1B, **_STUDENTS_POSE, "*": _POSE_SMALL},
             aliases=("keypoints",)),
    TaskSpec("seg", DeconvHeadConfig, SegHead, NUM_SEG_CLASSES,
             {"sapiens2_tiny": _TINY_DECONV_SEG, **_STUDENTS_SEG, "*": _SEG}, aliases=("segmentation", "bodyseg")),
    TaskSpec("normal", DenseHeadConfig, NormalHead, 3,
             {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _NORMAL_5B, "*": _DENSE_1K}, aliases=("normals",)),
    TaskSpec("pointmap", PointmapHeadConfig, PointmapHead, 3,
             {"sapiens2_tiny": {**_TINY_DENSE, **_TINY_SCALE}, "sapiens2_5b": _POINTMAP_5B, "*": _POINTMAP},
             aliases=("depth",)),
    TaskSpec("albedo", DenseHeadConfig, AlbedoHead, 3,
             {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _ALBEDO_5B, "*": _DENSE_1K}, published=False),
    TaskSpec("matting", DenseHeadConfig, MattingHead, 4,
             {"sapiens2_tiny": _TINY_DENSE, "sapiens2_5b": _NORMAL_5B, "*": _DENSE_1K},
             aliases=("alpha", "matte"), trainable=False),
)


def task_names() -> tuple[str, ...]:
    """Every task name, in the table's order."""
    return tuple(spec.name for spec in TASK_TABLE)


def task_aliases() -> dict[str, str]:
    """alias -> task name."""
    return {alias: spec.name for spec in TASK_TABLE for alias in spec.aliases}


def task_spec(task: str) -> TaskSpec:
    """The entry for a task name or alias (case and surrounding spaces ignored).

    Raises :class:`~sapiens2.errors.UnknownTaskError` (a ``ValueError``) naming the closest match and every
    task and alias; Predictor, the CLI, config files and the model builders all come here, so they accept
    the same names and fail with the same message.
    """
    text = str(task).strip()
    aliases = task_aliases()
    key = aliases.get(text.lower(), text.lower())
    for spec in TASK_TABLE:
        if spec.name == key:
            return spec
    names = task_names()
    close = difflib.get_close_matches(text.lower(), list(names) + list(aliases), n=1, cutoff=0.5)
    hint = f"; did you mean {aliases.get(close[0], close[0])!r}?" if close else ""
    listed = ", ".join(f"{alias} ({name})" for alias, name in aliases.items())
    raise UnknownTaskError(f"unknown task {text!r}{hint} (tasks: {', '.join(names)}; aliases: {listed})")


def resolve_task(task: str) -> str:
    """The canonical name of a task name or alias (see :func:`task_spec`)."""
    return task_spec(task).name


def resolve_tasks(values) -> list[str]:
    """Canonical names, first seen first and each once, of task names or aliases given as strings that may hold
    comma-separated lists (``--task pose,bodyseg``, a service's ``tasks=``)."""
    values = [values] if isinstance(values, str) else values
    return list(dict.fromkeys(resolve_task(part) for value in values for part in value.split(",") if part.strip()))


__all__ = ["NUM_KEYPOINTS", "NUM_SEG_CLASSES", "TASK_TABLE", "TaskSpec", "resolve_task", "resolve_tasks",
           "task_aliases", "task_names", "task_spec"]
