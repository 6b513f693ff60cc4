"""Hugging Face transformers ``save_pretrained`` folders: read what their ``config.json`` says, and write our
models as such a folder (``config.json`` + ``model.safetensors``) that ``from_pretrained`` loads.

The weights themselves are read by :mod:`~sapiens2.checkpoints.reading` (shards included) and renamed by
:mod:`~sapiens2.checkpoints.convert`; this module only deals with the folder and its config (spec
matting-and-transformers.md §2.5). transformers 5.x writes official key names (its ``save_pretrained`` reverses
its conversion mapping, minus ``rope_embed.periods``); :func:`save_transformers` writes transformers' own
in-memory names (:func:`~sapiens2.checkpoints.convert.to_transformers`). ``from_pretrained`` loads both.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.specs import keypoint_info, seg_classes
from ..errors import CheckpointError
from ..models.arch import NORM_EPS, NUM_STORAGE_TOKENS, PATCH_SIZE, ROPE_BASE
from ..models.backbone import Sapiens2Backbone
from ..models.heads import DeconvHeadConfig, PointmapHeadConfig
from ..models.heads.config import NUM_KEYPOINTS, NUM_SEG_CLASSES
from ..models.task_model import Sapiens2TaskModel
from .convert import to_transformers

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# transformers model class per task (no albedo model exists there); the backbone is Sapiens2Model.
ARCHITECTURES = {
    "pose": "Sapiens2ForPoseEstimation",
    "seg": "Sapiens2ForSemanticSegmentation",
    "normal": "Sapiens2ForNormalEstimation",
    "pointmap": "Sapiens2ForPointmapEstimation",
    "matting": "Sapiens2ForImageMatting",
}
BACKBONE_ARCHITECTURES = ("Sapiens2Model", "Sapiens2Backbone")
# The only deconv kernel whose padding transformers' head gets right (it fixes padding 1, output_padding 0), and
# the only refinement-conv kernel of its deconv heads (it fixes padding 0 there).
_DECONV_KERNEL = 4
_DECONV_HEAD_CONV_KERNEL = 1
_PIXEL_SHUFFLE_KERNEL = 3  # our dense heads' upsample convs (official, not configurable)


@dataclass(frozen=True)
class FolderConfig:
    """What a save_pretrained folder's config.json says: the task (None for a backbone) and the training size."""

    task: str | None
    image_size: tuple[int, int] | None


def read_folder_config(folder: str | os.PathLike) -> FolderConfig | None:
    """The task and image size from ``folder/config.json``; None when the folder has no config.json.

    Raises :class:`CheckpointError` for a config of another model type or of a transformers class we cannot
    load (a folder of some other model should not be read as Sapiens2 weights by accident).
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON: {e}") from e
    if config.get("model_type") != "sapiens2":
        raise CheckpointError(f"{str(path)!r} describes a {config.get('model_type')!r} model, not sapiens2")
    task = None
    by_class = {cls: t for t, cls in ARCHITECTURES.items()}
    for cls in config.get("architectures") or ():
        if cls in by_class:
            task = by_class[cls]
        elif cls not in BACKBONE_ARCHITECTURES:
            raise CheckpointError(f"{str(path)!r} is for the transformers class {cls}, which sapiens2 does not know; "
                                  f"known: {', '.join((*ARCHITECTURES.values(), *BACKBONE_ARCHITECTURES))}")
    size = config.get("image_size")
    if isinstance(size, int):
        size = (size, size)
    return FolderConfig(task, tuple(int(s) for s in size) if size else None)


def transformers_config(model: Sapiens2TaskModel | Sapiens2Backbone) -> dict:
    """The transformers ``Sapiens2Config`` (as a config.json dict) that builds the same network as ``model``.

    Raises :class:`CheckpointError` for what transformers cannot express: the 4K tokenizer, the albedo head,
    deconv kernels other than 4 and non-1x1 refinement convs in pose/seg heads, a scale MLP without exactly
    two hidden layers.
    """
    backbone = model.backbone if isinstance(model, Sapiens2TaskModel) else model
    if backbone.use_tokenizer:
        raise CheckpointError("transformers has no 4K tokenizer: a model with use_tokenizer=True cannot be written "
                              "in the transformers layout")
    arch = backbone.arch
    config = {
        "model_type": "sapiens2",
        "hidden_size": arch.embed_dim,
        "intermediate_size": arch.ffn_dim,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.num_heads,
        # Explicit per layer: transformers' default GQA width (8 KV heads) fits only 0.4b and 0.8b
        # (docs/official-facts.md §4.3).
        "num_key_value_heads_per_layer": list(arch.kv_heads_per_block),
        "image_size": list(backbone.img_size),
        "patch_size": PATCH_SIZE,
        "num_register_tokens": NUM_STORAGE_TOKENS,
        "rope_theta": ROPE_BASE,
        "rms_norm_eps": NORM_EPS,
        "dtype": str(backbone.patch_embed.projection.weight.dtype).removeprefix("torch."),
        "architectures": [BACKBONE_ARCHITECTURES[0]],
    }
    if isinstance(model, Sapiens2TaskModel):
        config.update(_head_config(model.task, model.head_config))
    return config


def _head_config(task: str, head) -> dict:
    if task not in ARCHITECTURES:
        raise CheckpointError(f"transformers has no {task} model: a {task} head cannot be written in the "
                              "transformers layout")
    if isinstance(head, DeconvHeadConfig):
        if not head.deconv_out_channels or set(head.deconv_kernel_sizes) != {_DECONV_KERNEL}:
            raise CheckpointError(f"transformers' {task} head only has 4x4 transposed convs (at least one); this head "
                                  f"has kernels {head.deconv_kernel_sizes}")
        if set(head.conv_kernel_sizes) - {_DECONV_HEAD_CONV_KERNEL}:
            raise CheckpointError(f"transformers' {task} head pads its refinement convs by 0, so only 1x1 convs "
                                  f"give the same output; this head has kernels {head.conv_kernel_sizes}")
        hc = {"upsample_out_channels": list(head.deconv_out_channels),
              "upsample_kernel_sizes": list(head.deconv_kernel_sizes)}
    else:
        hc = {"use_pixel_shuffle": True, "upsample_out_channels": list(head.upsample_channels),
              "upsample_kernel_sizes": [_PIXEL_SHUFFLE_KERNEL] * len(head.upsample_channels)}
    hc.update(conv_out_channels=list(head.conv_out_channels), conv_kernel_sizes=list(head.conv_kernel_sizes))
    if isinstance(head, PointmapHeadConfig):
        if len(head.scale_hidden_features) != 2:
            raise CheckpointError(f"transformers' pointmap scale MLP has exactly two hidden layers; this head has "
                                  f"{head.scale_hidden_features}")
        hc.update(scale_conv_out_channels=list(head.scale_conv_out_channels),
                  scale_conv_kernel_sizes=list(head.scale_conv_kernel_sizes),
                  scale_final_hidden_sizes=list(head.scale_hidden_features),
                  scale_final_input_size=head.scale_in_features)
    out = {"architectures": [ARCHITECTURES[task]], "head_config": hc, "id2label": _labels(task, head.out_channels)}
    if task == "pose" and head.out_channels == NUM_KEYPOINTS:
        # transformers' flip test swaps these pairs (config.flip_pairs); ours uses the same official swap table.
        out["flip_pairs"] = [[i, int(j)] for i, j in enumerate(keypoint_info().swap) if j > i]
    return out


def _labels(task: str, n: int) -> dict[str, str]:
    names = None
    if task == "pose" and n == NUM_KEYPOINTS:
        names = keypoint_info().names
    elif task == "seg" and n == NUM_SEG_CLASSES:
        names = seg_classes().names
    return {str(i): names[i] if names else f"LABEL_{i}" for i in range(n)}


def save_transformers(model: Sapiens2TaskModel | Sapiens2Backbone, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a transformers ``save_pretrained`` folder: ``config.json`` + ``model.safetensors``.

    ``transformers.AutoModel`` / ``Sapiens2For*.from_pretrained(folder)`` loads it with no missing or unexpected
    keys, and :func:`sapiens2.load_model` / :func:`sapiens2.load_backbone` load it back. The weights keep the
    model's dtype; the RoPE ``periods`` buffer is not written (transformers recomputes it in float32).
    Returns the folder.
    """
    from safetensors.torch import save_file

    if not isinstance(model, (Sapiens2TaskModel, Sapiens2Backbone)):
        raise TypeError(f"save_transformers takes a Sapiens2TaskModel or Sapiens2Backbone, got {type(model).__name__}")
    config = transformers_config(model)  # first: fail before writing anything
    tensors = to_transformers(_official_state_dict(model))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory; the split w12 halves are views of one tensor.
    tensors = {k: v if v.untyped_storage().nbytes() == v.numel() * v.element_size() else v.clone()
               for k, v in tensors.items()}
    # transformers refuses safetensors files without the "format" metadata.
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _official_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU, contiguous (safetensors needs both)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


__all__ = ["ARCHITECTURES", "FolderConfig", "read_folder_config", "save_transformers", "transformers_config"]
