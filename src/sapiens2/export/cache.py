"""The export cache: exported files kept by what they were exported from, so an export (minutes for a large model)
happens once per model, size and precision.

Folder: ``cache_dir``, else ``$SAPIENS2_EXPORT_CACHE``, else ``$XDG_CACHE_HOME/sapiens2/exports``, else
``~/.cache/sapiens2/exports``. Key (:func:`cache_path`): the model's identity (a checkpoint file by resolved path,
size and modification time, a published name by itself, a model object by a hash of its weights), the task, the
*requested* input size ("trained" when none was asked: the default size is a property of the checkpoint, so a cache
hit needs no model loaded to know it), dtype, quantisation (static: the calibration images' identity), opset, RoPE
precision, the export format version and the sapiens2 / torch versions. TensorRT engines add the GPU and the
TensorRT version (an engine runs only where it was built).
"""
from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path

from torch import nn

_WEIGHT_HASHES: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def export_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SAPIENS2_EXPORT_CACHE"):
        return Path(os.environ["SAPIENS2_EXPORT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sapiens2" / "exports"


def module_identity(model: nn.Module) -> dict:
    """A model object's identity: a SHA-256 of its weights (seconds for a large model, against minutes of export).
    Remembered per object while its parameters stay the same tensors with the same version counters (an in-place
    update such as an optimizer step bumps them), so a benchmark that prepares one model many times hashes once."""
    state = model.state_dict()
    stamp = tuple((name, t.data_ptr(), t._version, tuple(t.shape)) for name, t in state.items())
    known = _WEIGHT_HASHES.get(model)
    if known is not None and known[0] == stamp:
        return {"weights_sha256": known[1]}
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    _WEIGHT_HASHES[model] = (stamp, digest.hexdigest())
    return {"weights_sha256": digest.hexdigest()}


def folder_identity(folder: str | os.PathLike) -> dict:
    """A folder of calibration images by its files' names, sizes and modification times."""
    root = Path(folder).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in files:
        stat = p.stat()
        digest.update(f"{p.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"folder": str(root), "files": len(files), "sha256": digest.hexdigest()}


def cache_key(task: str, identity: dict, input_size: tuple[int, int] | None, *, dtype: str = "float32",
              quantization: str | None = None, calibration: dict | None = None, opset: int | None = None,
              rope_dtype: str = "bf16", target: dict | None = None) -> dict:
    from .exporter import DEFAULT_OPSET, _versions
    from .metadata import FORMAT_VERSION

    versions = _versions()
    return {"task": task, "model": identity, "input_size": list(input_size) if input_size else "trained",
            "dtype": dtype, "quantization": quantization, "calibration": calibration,
            "opset": opset or DEFAULT_OPSET, "rope_dtype": str(rope_dtype), "format_version": FORMAT_VERSION,
            "sapiens2": versions.get("sapiens2"), "torch": versions.get("torch"), "target": target}


def cache_path(task: str, identity: dict, input_size: tuple[int, int] | None, *, dtype: str = "float32",
               quantization: str | None = None, calibration: dict | None = None, opset: int | None = None,
               rope_dtype: str = "bf16", cache_dir=None, suffix: str = ".onnx", target: dict | None = None) -> Path:
    """Where the export of this model at this requested size (None: the size it was trained at) is kept."""
    key = cache_key(task, identity, input_size, dtype=dtype, quantization=quantization, calibration=calibration,
                    opset=opset, rope_dtype=rope_dtype, target=target)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    size = f"{input_size[0]}x{input_size[1]}" if input_size else "trained"
    kind = dtype if quantization is None else f"{dtype}-{quantization}"
    return export_cache_dir(cache_dir) / f"{task}-{size}-{kind}-{digest}{suffix}"
