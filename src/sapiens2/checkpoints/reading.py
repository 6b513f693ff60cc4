"""Read a checkpoint file into a flat ``{key: tensor}`` dict, memory-mapped, whatever its container.

Handles ``.safetensors`` and PyTorch files (``.pth`` / ``.pt`` / ``.bin``, zip or legacy pickle), and the folders
transformers' ``save_pretrained`` writes (``model.safetensors``, or shards listed by an ``*.index.json``). The format
is decided by the file's first bytes, not its suffix, so a mislabelled file still loads and a file that is
not a checkpoint gets an error that says what it looks like. PyTorch files are opened with
``weights_only=True`` (no arbitrary code) and unwrapped from the usual training containers
(``state_dict`` / ``model`` / ``teacher`` / ``module``); ``module.`` (DDP) and ``_orig_mod.``
(``torch.compile``) key prefixes are removed. Key *layouts* (transformers vs official) are not touched here:
that is :mod:`sapiens2.checkpoints.convert`.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Training scripts nest the weights under one of these keys; tried in this order.
WRAPPER_KEYS = ("state_dict", "model", "teacher", "module", "model_state_dict")
# Prefixes added by wrappers around the model (DDP, torch.compile); stripped from every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# The weight files of a transformers ``save_pretrained`` folder, in the order transformers itself looks for them.
FOLDER_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                       "pytorch_model.bin.index.json")

_ZIP_MAGIC = b"PK\x03\x04"
_SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on the JSON header


def detect_format(path: str | os.PathLike) -> str:
    """``"safetensors"``, ``"torch-zip"`` or ``"torch-pickle"`` from the file's first bytes.

    Raises :class:`CheckpointError` naming the problem for a missing path, a directory, an empty file,
    a text file or any other content.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise _not_a_model_folder(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is an empty file")
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2..5 opcode
        return "torch-pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len <= _SAFETENSORS_MAX_HEADER:
            if 8 + header_len > size:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} is a truncated safetensors file: its header alone needs "
                    f"{8 + header_len} bytes but the file has {size}"
                )
            _check_safetensors_size(path, header_len, size)
            return "safetensors"
    if _looks_like_text(head):
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint: it looks like a text file (starts with {head[:16]!r}); "
            "expected a .safetensors or PyTorch .pth/.pt/.bin file"
        )
    raise CheckpointError(
        f"{str(path)!r} is not a checkpoint: its content is neither safetensors nor a PyTorch zip/pickle file "
        f"(first bytes {head[:8].hex(' ')})"
    )


def _not_a_model_folder(path: Path) -> CheckpointError:
    found = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
    hint = f"; checkpoint files inside it: {', '.join(found)}" if found else "; it holds no checkpoint files"
    return CheckpointError(f"checkpoint {str(path)!r} is a directory without the weights of a transformers "
                           f"save_pretrained folder ({' or '.join(FOLDER_WEIGHT_FILES)}){hint}")


def folder_weight_files(path: str | os.PathLike) -> list[Path]:
    """The weight files of a transformers ``save_pretrained`` folder: the single file, or every shard its index
    names. Raises :class:`CheckpointError` if the folder has none or the index names a missing shard."""
    path = Path(path)
    name = next((n for n in FOLDER_WEIGHT_FILES if (path / n).is_file()), None)
    if name is None:
        raise _not_a_model_folder(path)
    if not name.endswith(".index.json"):
        return [path / name]
    index = path / name
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(index)!r} is not a transformers shard index (no weight_map): {e}") from e
    missing = [s for s in shards if not (path / s).is_file()]
    if missing:
        raise CheckpointError(f"{str(index)!r} names shards that are not in the folder: {', '.join(missing[:5])} "
                              "(incomplete download?)")
    return [path / s for s in shards]


def _check_safetensors_size(path: Path, header_len: int, size: int) -> None:
    """Compare the data size the header describes with the file size, to name truncation precisely."""
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has a corrupt safetensors header: {e}") from e
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a truncated safetensors file: its header describes "
            f"{8 + header_len + end} bytes but the file has {size} (incomplete download or copy?)"
        )


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint file (or save_pretrained folder), memory-mapped on the CPU, with wrapper
    prefixes removed.

    Tensors keep the file's dtype and share memory with the mapped file (nothing is copied until a
    tensor is written to or converted), so loading a 5B file does not need twice its size in RAM.
    """
    if Path(path).is_dir():  # a save_pretrained folder: merge its shards
        state = {}
        for file in folder_weight_files(path):
            shard = _read_file(file)
            twice = shard.keys() & state.keys()
            if twice:
                raise CheckpointError(f"{str(file)!r} repeats keys of another shard: {', '.join(sorted(twice)[:5])}")
            state.update(shard)
    else:
        state = _read_file(Path(path))
    state = _strip_wrapper_prefixes(state)
    if not state:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no tensors")
    return state


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    fmt = detect_format(path)
    return _read_safetensors(path) if fmt == "safetensors" else _read_torch(path, fmt)


def recorded_img_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """The input size (H, W) a model was trained at, as our trainer records it in the safetensors metadata
    (``img_size`` ``"256x192"``); None when the file records none (official and published files, PyTorch files)."""
    from safetensors import safe_open

    try:
        if detect_format(path) != "safetensors":
            return None
        with safe_open(str(path), framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get("img_size")
        if not text:
            return None
        height, width = (int(v) for v in text.lower().split("x"))
        return height, width
    except Exception as exc:  # a bad file or value (SafetensorError too): the weights' reader reports bad files
        logger.debug("no img_size read from %s: %s", path, exc)
        return None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        # safe_open maps the file; get_tensor returns tensors backed by the mapping (lazy, no copy).
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ...: the message names the defect
        raise CheckpointError(f"cannot read safetensors file {str(path)!r} (corrupt or truncated?): {e}") from e


def _read_torch(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    # mmap needs the zip format; the legacy pickle format is read into memory.
    mmap = fmt == "torch-zip"
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            raise CheckpointError(
                f"PyTorch file {str(path)!r} holds Python objects that are not plain tensors, which sapiens2 does "
                "not unpickle (weights_only=True, for safety). Re-save only its state dict, e.g. "
                "`torch.save(torch.load(p, weights_only=False)['state_dict'], out)` in an environment you trust, "
                "or convert it to .safetensors."
            ) from e
        raise CheckpointError(f"cannot read PyTorch file {str(path)!r} (corrupt or truncated?): "
                              f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}") from e
    return _unwrap(obj, str(path))


def _unwrap(obj, source: str, depth: int = 0) -> dict[str, torch.Tensor]:
    """Descend into training containers until a mapping of tensors is found."""
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors and len(tensors) * 2 >= len(obj):  # mostly tensors: this is the state dict
            dropped = len(obj) - len(tensors)
            if dropped:
                logger.debug("%s: ignoring %d non-tensor entries", source, dropped)
            return tensors
        if depth < 4:
            for key in WRAPPER_KEYS:
                if isinstance(obj.get(key), Mapping):
                    logger.debug("%s: using the %r entry", source, key)
                    return _unwrap(obj[key], source, depth + 1)
        found = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointError(
            f"PyTorch file {source!r} holds no state dict: expected tensors or one of the entries "
            f"{', '.join(WRAPPER_KEYS)}; found {found or 'an empty dict'}"
        )
    raise CheckpointError(f"PyTorch file {source!r} holds a {type(obj).__name__}, not a state dict")


def _strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        if key in out:
            raise CheckpointError(f"checkpoint has the key {key!r} twice once wrapper prefixes are removed")
        out[key] = value
    return out
