"""Runtimes behind the Predictor: ``torch`` (the model itself), ``onnxruntime`` and ``tensorrt``.

A backend model is anything callable like the torch model: a normalised float (B, 3, H, W) tensor in, the same
output structure out (a tensor, or pointmap's ``(pointmap, scale)`` tuple), with ``task`` and ``img_size``. All pre-
and post-processing stays in the Predictor, shared by every backend, so outputs match the torch path.

``onnxruntime`` loads an exported ``.onnx`` file, or exports the torch model on first use into the export cache
(``sapiens2.export.cache``: keyed by the checkpoint's identity, task, requested input size, dtype, opset and the
export format version), so the export (minutes for large models) happens once and a cache hit loads no torch model.
``tensorrt`` (CUDA) loads a ``.engine`` built by ``sapiens2 export --format tensorrt`` on this GPU, or builds one
once into the cache from a ``.onnx`` file or from the cached ONNX export of a checkpoint, in float32, float16 or
bfloat16 (the Predictor's dtype); an engine from another GPU or TensorRT version is refused, naming the fix.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from sapiens2.errors import UsageError

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
    allowed = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16") if name == "tensorrt" else ("float32", "fp32")
    if name != "torch" and str(dtype).replace("torch.", "") not in allowed:
        raise UsageError(f"backend {name} runs the precision of its exported file; --dtype {dtype} is for the torch "
                         "backend. For int8 or float16 export a file (sapiens2 export --dtype int8 ...) and pass it "
                         "with --checkpoint TASK=FILE")
    return name


def is_exported_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in EXPORTED_SUFFIXES \
        and Path(spec).is_file()


def check_backend_dtype(backend: str, dtype) -> str:
    """The precision an exported model is built in: float32 for onnxruntime; float32, float16 or bfloat16 for
    tensorrt (builder flags). ``dtype``: a name, a torch dtype, or None (float32)."""
    if backend != "tensorrt":
        return "float32"
    text = str(dtype).replace("torch.", "").strip().lower() if dtype is not None else "float32"
    return {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(text, text)


def load_backend_model(backend: str, task: str, spec, *, input_size: tuple[int, int] | None,
                       device: torch.device, rope_dtype: str = "bf16", cache_dir=None, export_cache=None,
                       threads: int | None = None, dtype=None) -> BackendModel:
    """The ``backend`` model for ``task`` from ``spec``: an exported file (loaded, checked against task and input
    size), or a checkpoint path / published name / model object, exported once into the cache, then loaded. A
    cache hit loads no torch model: the key is the checkpoint's identity and the *requested* input size.
    ``dtype``: the tensorrt engine's precision (float32, float16, bfloat16); onnxruntime runs float32 exports (an
    int8 file is passed as ``spec``)."""
    from sapiens2.export import load_exported

    precision = check_backend_dtype(backend, dtype)
    if is_exported_file(spec):
        suffix = Path(spec).suffix.lower()
        if backend == "onnxruntime" and suffix != ".onnx":
            raise UsageError(f"backend onnxruntime runs .onnx files, not {Path(spec).name}")
        if backend == "tensorrt" and suffix == ".pt2":
            raise UsageError(f"backend tensorrt runs .engine files (or builds one from a .onnx), not {Path(spec).name}")
        if backend == "onnxruntime" or suffix == ".engine":
            return load_exported(spec, task=task, input_size=input_size, device=device, threads=threads)
        from sapiens2.export.exporter import checkpoint_identity

        return _engine_from_onnx(task, Path(spec), {"onnx_file": checkpoint_identity(spec)}, input_size, precision,
                                 device, export_cache)
    onnx_file, identity = _cached_onnx(task, spec, input_size=input_size, rope_dtype=rope_dtype,
                                       cache_dir=cache_dir, export_cache=export_cache)
    if backend == "tensorrt":
        return _engine_from_onnx(task, onnx_file, identity, input_size, precision, device, export_cache)
    return load_exported(onnx_file, task=task, input_size=input_size, device=device, threads=threads)


def _cached_onnx(task: str, spec, *, input_size, rope_dtype: str, cache_dir, export_cache) -> tuple[Path, dict]:
    """(the float32 .onnx export of ``spec`` in the cache, exported now on a miss; the model's identity)."""
    from sapiens2.export import export_model
    from sapiens2.export.cache import cache_path, module_identity
    from sapiens2.export.exporter import checkpoint_identity, load_for_export

    if isinstance(spec, nn.Module):
        model, identity = spec, module_identity(spec)
    else:
        from sapiens2.checkpoints import resolve_checkpoint

        resolved = resolve_checkpoint(spec, task=task, cache_dir=cache_dir).path  # downloads a published name once
        model, identity, spec = None, checkpoint_identity(resolved), resolved
    hw = tuple(input_size) if input_size is not None else None
    target = cache_path(task, identity, hw, rope_dtype=rope_dtype, cache_dir=export_cache)
    if target.is_file():
        log.debug("using the cached export %s", target)
        return target, identity
    if model is None:
        model = load_for_export(task, spec, rope_dtype=rope_dtype, cache_dir=cache_dir)
    log.info("exporting %s to ONNX (once; cached at %s)", task, target)
    export_model(model.cpu().eval(), target, format="onnx", input_size=hw, source=identity)
    return target, identity


def _engine_from_onnx(task: str, onnx_file: Path, identity: dict, input_size, precision: str, device,
                      export_cache) -> BackendModel:
    """A TensorRT engine built (once, into the cache; keyed by this GPU and TensorRT version) from a float32 ONNX
    export, then loaded."""
    from dataclasses import replace

    from sapiens2.export import load_exported, read_export_metadata
    from sapiens2.export.cache import cache_path
    from sapiens2.export.loaded import check_metadata
    from sapiens2.export.tensorrt import build_engine, current_target

    target = current_target(device)  # names the missing extra, or the missing GPU, first
    meta = read_export_metadata(onnx_file)
    check_metadata(meta, onnx_file, task=task, input_size=input_size)
    if meta.dtype != "float32":
        raise UsageError(f"{onnx_file} is a {meta.dtype} export: TensorRT engines are built from float32 ONNX files "
                         f"(--dtype picks the engine's precision)")
    engine = cache_path(task, identity, tuple(meta.input_size), dtype=precision, rope_dtype=meta.rope_dtype,
                        cache_dir=export_cache, suffix=".engine", target=target)
    if not engine.is_file():
        import onnx

        log.info("building a TensorRT %s engine for %s (once; cached at %s)", precision, target["gpu"], engine)
        build_engine(onnx.load(str(onnx_file)), replace(meta, dtype=precision), engine, device=device)
    return load_exported(engine, task=task, input_size=input_size, device=device)
