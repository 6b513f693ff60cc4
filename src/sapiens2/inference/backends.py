"""Runtimes behind the Predictor: ``torch`` (the model itself), ``onnxruntime`` and ``tensorrt``.

A backend model is anything callable like the torch model: a normalised float (B, 3, H, W) tensor in, the same
output structure out (a tensor, or pointmap's ``(pointmap, scale)`` tuple), with ``task`` and ``img_size``. All pre-
and post-processing stays in the Predictor, shared by every backend, so outputs match the torch path.

``onnxruntime`` loads an exported ``.onnx`` file, or exports the torch model on first use into a cache folder
(``$SAPIENS2_EXPORT_CACHE``, else ``$XDG_CACHE_HOME/sapiens2/exports``, else ``~/.cache/sapiens2/exports``) keyed
by the checkpoint's identity, task, input size, dtype, opset and the export format version, so the export (minutes
for large models) happens once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from sapiens2.errors import ExportError, UsageError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
EXPORTED_SUFFIXES = (".onnx", ".pt2", ".engine")


class BackendModel(Protocol):
    task: str
    img_size: tuple[int, int]

    def __call__(self, x: torch.Tensor): ...


def check_backend(backend: str, dtype) -> str:
    """The backend name, or UsageError for an unknown one or a dtype it cannot run."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    if name != "torch" and str(dtype).replace("torch.", "") not in ("float32", "fp32"):
        raise UsageError(f"backend {name} runs the precision of its exported file; --dtype {dtype} is for the torch "
                         "backend. For int8 or float16 export a file (sapiens2 export --dtype int8 ...) and pass it "
                         "with --checkpoint TASK=FILE")
    return name


def is_exported_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in EXPORTED_SUFFIXES \
        and Path(spec).is_file()


def export_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("SAPIENS2_EXPORT_CACHE"):
        return Path(os.environ["SAPIENS2_EXPORT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sapiens2" / "exports"


def _module_identity(model: nn.Module) -> dict:
    """A model object's identity: a hash of its weights (a large model takes seconds, the export minutes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return {"weights_sha256": digest.hexdigest()}


def cache_path(task: str, identity: dict, input_size: tuple[int, int], *, dtype: str = "float32",
               opset: int | None = None, rope_dtype: str = "bf16", cache_dir=None) -> Path:
    """Where the onnxruntime backend keeps the export of this model at this size."""
    from sapiens2.export.exporter import DEFAULT_OPSET, _versions
    from sapiens2.export.metadata import FORMAT_VERSION

    versions = _versions()
    key = {"task": task, "model": identity, "input_size": list(input_size), "dtype": dtype,
           "opset": opset or DEFAULT_OPSET, "rope_dtype": str(rope_dtype), "format_version": FORMAT_VERSION,
           "sapiens2": versions.get("sapiens2"), "torch": versions.get("torch")}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return export_cache_dir(cache_dir) / f"{task}-{input_size[0]}x{input_size[1]}-{dtype}-{digest}.onnx"


def load_backend_model(backend: str, task: str, spec, *, input_size: tuple[int, int] | None,
                       device: torch.device, rope_dtype: str = "bf16", cache_dir=None, export_cache=None,
                       threads: int | None = None) -> BackendModel:
    """The ``backend`` model for ``task`` from ``spec``: an exported file (loaded, checked against task and input
    size), or a checkpoint path / published name / model object (exported once into the cache, then loaded)."""
    from sapiens2.export import export_model, load_exported
    from sapiens2.export.exporter import checkpoint_identity, load_for_export

    if backend == "tensorrt":
        raise ExportError("the tensorrt backend is not available in this build: export an engine with "
                          "`sapiens2 export --format tensorrt` on the GPU machine and run it with TensorRT, or use "
                          "--backend onnxruntime (its CUDA provider is used on CUDA devices)")
    if is_exported_file(spec):
        if Path(spec).suffix.lower() != ".onnx":
            raise UsageError(f"backend onnxruntime runs .onnx files, not {Path(spec).name}")
        return load_exported(spec, task=task, input_size=input_size, device=device, threads=threads)
    if isinstance(spec, nn.Module):
        model, identity = spec, _module_identity(spec)
    else:
        from sapiens2.checkpoints import resolve_checkpoint

        resolved = resolve_checkpoint(spec, task=task, cache_dir=cache_dir).path  # downloads a published name once
        model, identity = None, checkpoint_identity(resolved)
        spec = resolved
    if model is None:
        model = load_for_export(task, spec, rope_dtype=rope_dtype, cache_dir=cache_dir)
    hw = tuple(input_size) if input_size is not None else tuple(getattr(model, "img_size", (1024, 768)))
    target = cache_path(task, identity, hw, rope_dtype=rope_dtype, cache_dir=export_cache)
    if not target.is_file():
        log.info("exporting %s to ONNX for the onnxruntime backend (once; cached at %s)", task, target)
        export_model(model.cpu().eval(), target, format="onnx", input_size=hw, source=identity)
    else:
        log.debug("using the cached export %s", target)
    return load_exported(target, task=task, input_size=hw, device=device, threads=threads)
