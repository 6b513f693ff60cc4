"""From a path or a published name to a loaded model: resolve, read, convert, check, assign.

``load_backbone`` is the public entry point for backbones; the task-model loader uses the same steps
(:func:`resolve_checkpoint`, :func:`read_official_state_dict`, ``load_state_dict_strict``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.arch import get_arch
from ..models.backbone import Sapiens2Backbone, build_backbone
from ..models.task_model import Sapiens2TaskModel, build_model_for_state_dict
from .arch_inference import infer_backbone_config
from .convert import to_official
from .hub import download_checkpoint
from .reading import CHECKPOINT_SUFFIXES, read_state_dict, recorded_img_size
from .registry import INPUT_SIZE_4K, STANDARD_INPUT_SIZE, PublishedModel, resolve_model_name
from .strict_load import load_state_dict_strict
from .transformers_folder import read_folder_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A local checkpoint file and, when it was named by a published name, that model's registry entry."""

    path: Path
    published: PublishedModel | None = None


def resolve_checkpoint(path_or_name: str | os.PathLike, *, task: str | None = None,
                       default_task: str | None = None, cache_dir: str | os.PathLike | None = None,
                       endpoint: str | None = None, timeout: float | None = None) -> ResolvedCheckpoint:
    """Turn a local path or a published model name into a local file.

    An existing path wins. A string that looks like a path (has a directory part or a checkpoint suffix) but
    does not exist is an error, not a name. Anything else is looked up with
    :func:`~sapiens2.checkpoints.registry.resolve_model_name` (``task`` / ``default_task`` complete short
    names) and fetched with :func:`~sapiens2.checkpoints.hub.download_checkpoint` (cache first, fails fast
    offline with :class:`~sapiens2.errors.ModelNotAvailableError`).
    """
    text = os.fspath(path_or_name)
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedCheckpoint(path)
    looks_like_path = isinstance(path_or_name, os.PathLike) or os.sep in text or (
        os.altsep is not None and os.altsep in text) or text.lower().endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path:
        hint = ""
        try:
            entry = resolve_model_name(path.name, task=task, default_task=default_task)
            hint = f" (to download the published file, pass the name {entry.name!r})"
        except CheckpointError:
            pass
        raise CheckpointError(f"checkpoint {text!r} does not exist{hint}")
    entry = resolve_model_name(text, task=task, default_task=default_task)
    return ResolvedCheckpoint(download_checkpoint(entry, cache_dir=cache_dir, endpoint=endpoint, timeout=timeout),
                              entry)


def read_official_state_dict(path: str | os.PathLike, *, task: str | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (memory-mapped) into the official key layout.

    Unwraps training containers, strips ``module.`` prefixes and maps the transformers layout (``task``
    names its head when the structure is ambiguous). Task files come back as ``backbone.*`` +
    ``decode_head.*``, pretrain files unprefixed.
    """
    return to_official(read_state_dict(path), task=task)


def backbone_state_dict(state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The backbone part of an official-layout state dict: ``backbone.*`` of a task file (prefix removed),
    or the whole of a pretrain file."""
    if any(k.startswith("backbone.") for k in state_dict):
        return {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    if any(k.startswith("decode_head.") for k in state_dict):
        raise CheckpointError(f"{source} holds only a task head (decode_head.*), no backbone")
    return state_dict


def load_backbone(path_or_name: str | os.PathLike, *, rope_dtype: str | torch.dtype = "bf16",
                  img_size: tuple[int, int] | None = None, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None, arch: str | None = None, use_tokenizer: bool | None = None,
                  cache_dir: str | os.PathLike | None = None) -> Sapiens2Backbone:
    """Load a Sapiens2 backbone from a checkpoint file or a published model name, in eval mode.

    ``path_or_name``: a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file (official or transformers key
    layout, pretrain or task file: a task file gives its backbone), a transformers ``save_pretrained`` folder, or a
    published name such as
    ``"sapiens2-pretrain-1b"``, ``"pose-1b"`` or ``"0.4b"`` (a bare size means the pretrain model).
    The arch and the 4K tokenizer are inferred from the tensor shapes; ``arch`` / ``use_tokenizer`` force
    them (a file of another arch then raises :class:`~sapiens2.errors.ArchMismatchError`).
    ``img_size`` (H, W) defaults to the size the model was trained at (1024x768, 4096x3072 for 4K).
    Weights keep the file's dtype unless ``dtype`` is given and are memory-mapped, never held twice.
    """
    resolved = resolve_checkpoint(path_or_name, default_task="pretrain", cache_dir=cache_dir)
    source = str(resolved.path)
    state = backbone_state_dict(read_official_state_dict(resolved.path), source)
    entry = resolved.published
    try:
        inferred = infer_backbone_config(state)
    except CheckpointError:
        if arch is None and entry is None:
            raise
        inferred = None  # the explicit arch's strict load will list what is wrong
    # Precedence: what the caller says, then the registry entry of a published name, then the file's shapes.
    if arch is not None:
        arch_name = get_arch(arch).name
        if use_tokenizer is None:
            use_tokenizer = inferred[1] if inferred else False
    elif entry is not None:
        arch_name = entry.arch
        use_tokenizer = entry.use_tokenizer if use_tokenizer is None else use_tokenizer
    else:
        arch_name = inferred[0]
        use_tokenizer = inferred[1] if use_tokenizer is None else use_tokenizer
    folder = read_folder_config(resolved.path) if resolved.path.is_dir() else None
    if img_size is None and folder is not None and folder.image_size is not None:
        img_size = folder.image_size  # a save_pretrained folder says what size it was trained at
    if img_size is None:
        img_size = entry.input_size if entry else (INPUT_SIZE_4K if use_tokenizer else STANDARD_INPUT_SIZE)
    hint = ""
    if inferred and inferred != (arch_name, use_tokenizer):
        hint = (f"The file looks like {inferred[0]}{' with the 4K tokenizer' if inferred[1] else ''}; "
                f"asked for {arch_name}{' with the 4K tokenizer' if use_tokenizer else ''}.")
    model = build_backbone(arch_name, img_size=tuple(img_size), use_tokenizer=use_tokenizer,
                           rope_dtype=rope_dtype, device="meta", dtype=dtype)
    target = f"{arch_name}{' with the 4K tokenizer' if use_tokenizer else ''}"
    load_state_dict_strict(model, state, device=device, dtype=dtype, source=source, target=target, hint=hint)
    logger.debug("loaded %s (%s, tokenizer=%s) from %s", arch_name, img_size, use_tokenizer, source)
    return model.eval()


def load_model(path_or_name: str | os.PathLike, task: str | None = None, *, rope_dtype: str | torch.dtype = "bf16",
               img_size: tuple[int, int] | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None, cache_dir: str | os.PathLike | None = None) -> Sapiens2TaskModel:
    """Load a task model (pose, seg, normal, pointmap, albedo, matting) in eval mode.

    ``path_or_name``: a task checkpoint file (official or transformers layout), a transformers ``save_pretrained``
    folder (``config.json`` + ``model.safetensors``, possibly sharded), or a published name such as
    ``"sapiens2-seg-0.4b"`` (``"seg-0.4b"``, or ``"0.4b"`` with ``task="seg"``). The task, the head's channel
    layout and the backbone arch are inferred from the tensors; ``task``, when given, must agree with the file.
    ``img_size`` defaults to what the model was trained at: a folder's config.json ``image_size``, or the size our
    trainer records in a file's metadata, else 1024x768 (pointmap: the size its scale branch fixes). ``sapiens2
    predict`` and ``eval`` both rely on it.
    """
    resolved = resolve_checkpoint(path_or_name, task=task, cache_dir=cache_dir)
    source = str(resolved.path)
    folder = read_folder_config(resolved.path) if resolved.path.is_dir() else None
    if folder is not None:
        # A save_pretrained folder's config names the head (the file's structure still decides and is checked
        # against it) and the size it was trained at, which ties the pointmap scale MLP.
        task = task or folder.task
        if img_size is None and folder.image_size is not None:
            img_size = folder.image_size
    elif img_size is None:
        img_size = recorded_img_size(resolved.path)
    state = read_official_state_dict(resolved.path, task=task)
    if not any(k.startswith("decode_head.") for k in state):
        raise CheckpointError(f"{source} holds no task head (no decode_head.* keys): it is a backbone/pretrain "
                              "checkpoint; use sapiens2.load_backbone for it")
    arch_name, use_tokenizer = infer_backbone_config(backbone_state_dict(state, source))
    model = build_model_for_state_dict(state, arch_name, task=task, img_size=img_size, use_tokenizer=use_tokenizer,
                                       rope_dtype=rope_dtype, device="meta", dtype=dtype)
    load_state_dict_strict(model, state, device=device, dtype=dtype, source=source,
                           target=f"{model.task} model on {arch_name}")
    logger.debug("loaded %s %s (%s) from %s", model.task, arch_name, model.img_size, source)
    return model.eval()
