"""Read a checkpoint file into a flat ``{key: tensor}`` dict, memory-mapped, whatever its container.

Handles ``.safetensors`` and PyTorch files (``.pth`` / ``.pt`` / ``.bin``, zip or legacy pickle). The format
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
        found = sorted(p.name for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        hint = f"; checkpoint files inside it: {', '.join(found)}" if found else "; it holds no checkpoint files"
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file{hint}")
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
    """Read every tensor of a checkpoint file, memory-mapped on the CPU, with wrapper prefixes removed.

    Tensors keep the file's dtype and share memory with the mapped file (nothing is copied until a
    tensor is written to or converted), so loading a 5B file does not need twice its size in RAM.
    """
    fmt = detect_format(path)
    if fmt == "safetensors":
        state = _read_safetensors(Path(path))
    else:
        state = _read_torch(Path(path), fmt)
    state = _strip_wrapper_prefixes(state)
    if not state:
        raise CheckpointError(f"checkpoint {str(path)!r} holds no tensors")
    return state


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
