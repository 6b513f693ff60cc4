"""Export a pretrained backbone as a safetensors file in the official pretrain key layout.

Keys (no prefix): ``cls_token``, ``storage_tokens``, ``patch_embed.projection.{weight,bias}``,
``rope_embed.periods`` (bfloat16, computed as the official code does), ``blocks.N.*``, ``ln1.weight`` and, for a
4K model, ``tokenizer.*``. ``sapiens2.load_backbone``, fine-tuning (``--model path``) and the official
``Sapiens2`` class all load it strictly; the arch is inferred from the shapes.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ...errors import TrainingConfigError
from ...io.writers import atomic_path

from ...models.backbone import Sapiens2Backbone
from ...models.rope import RopePositionEmbedding

logger = logging.getLogger(__name__)

_TOP_KEYS = ("cls_token", "storage_tokens", "rope_embed.periods", "ln1.weight")
_TOP_PREFIXES = ("patch_embed.", "blocks.", "tokenizer.")


def find_backbone(model: nn.Module, which: str = "teacher") -> Sapiens2Backbone:
    """The backbone of a :class:`PretrainModel` (``which`` = teacher, as DINO/iBOT evaluate, or student), of a
    (DDP-wrapped) student, or the backbone itself."""
    if which not in ("teacher", "student"):
        raise TrainingConfigError(f"which must be 'teacher' or 'student', got {which!r}")
    model = getattr(model, "module", model)  # DDP
    if isinstance(model, Sapiens2Backbone):
        return model
    part = getattr(model, which, None)
    if part is not None and isinstance(getattr(part, "backbone", None), Sapiens2Backbone):
        return part.backbone
    if isinstance(getattr(model, "backbone", None), Sapiens2Backbone):
        return model.backbone
    raise TypeError(f"no Sapiens2 backbone found in {type(model).__name__}")


def _full(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 shards parameters as DTensors; gathering (collective) gives the whole tensor.
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def official_backbone_state(backbone: Sapiens2Backbone, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The backbone's tensors under the official pretrain keys, on CPU, contiguous; ``dtype`` casts the
    floating-point weights (the RoPE periods stay bfloat16, as published)."""
    state = {}
    for key, value in backbone.state_dict().items():
        if key.startswith(_TOP_PREFIXES) or key in _TOP_KEYS:
            t = _full(value).detach().to("cpu")
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            state[key] = t.contiguous()
        else:
            raise KeyError(f"unexpected backbone key {key!r}; the export layout needs updating")
    # The official files store the periods in bf16, computed in bf16, whatever dtype this model rotated in.
    state["rope_embed.periods"] = RopePositionEmbedding(backbone.arch.head_dim, "bf16", device="cpu").periods.clone()
    missing = [k for k in _TOP_KEYS if k not in state]
    if missing:
        raise KeyError(f"backbone state lacks {missing}")
    return state


def export_backbone(model: nn.Module, path: str | os.PathLike, which: str = "teacher",
                    dtype: torch.dtype | None = None) -> Path:
    """Write the backbone of ``model`` (a PretrainModel, student or backbone) to ``path`` (.safetensors).

    Collective under FSDP (every rank calls it; rank 0 writes). The file is written to a temporary name and
    renamed, so a crash never leaves a truncated checkpoint.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise TrainingConfigError(f"export path must end in .safetensors, got {path}")
    backbone = find_backbone(model, which)
    state = official_backbone_state(backbone, dtype)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        with atomic_path(path) as temp:  # nothing is left behind if the write fails
            save_file(state, str(temp), metadata={"format": "pt", "arch": backbone.arch.name,
                                                   "use_tokenizer": str(backbone.use_tokenizer).lower()})
        logger.info("exported the %s backbone (%s, %d tensors) to %s", which, backbone.arch.name, len(state), path)
    return path
