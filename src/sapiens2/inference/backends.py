"""Runtimes behind the Predictor: ``torch`` (the model itself), ``onnxruntime``, ``aoti`` and ``tensorrt``.

A backend model is anything callable like the torch model: a normalised float (B, 3, H, W) tensor in, the same
output structure out (a tensor, or pointmap's ``(pointmap, scale)`` tuple), with ``task`` and ``img_size``. All pre-
and post-processing stays in the Predictor, shared by every backend, so outputs match the torch path.

``onnxruntime`` loads an exported ``.onnx`` file, or exports the torch model on first use into the export cache
(``sapiens2.export.cache``: keyed by the checkpoint's identity, task, requested input size, dtype, opset and the
export format version), so the export (minutes for large models) happens once and a cache hit loads no torch model.
``tensorrt`` (CUDA) loads a ``.engine`` built by ``sapiens2 export --format tensorrt`` on this GPU, or builds one
once into the cache from a ``.onnx`` file or from the cached ONNX export of a checkpoint, in float32, float16 or
bfloat16 (the Predictor's dtype); an engine from another GPU or TensorRT version is refused, naming the fix.
``aoti`` loads an AOTInductor package (``sapiens2 export --format aoti``), or compiles one once into the cache for
this machine and the Predictor's device and dtype (float32, bfloat16, float16); a package compiled for another
device, OS or CPU is refused, naming the fix.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from sapiens2.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """One ``backend``: the exported files it takes as the model (suffixes), and the precisions the Predictor's
    dtype may ask of a model it builds (empty for torch: the model's own autocast decides)."""

    name: str
    files: tuple[str, ...]
    precisions: tuple[str, ...]


_BUILT = ("float32", "float16", "bfloat16")
RUNTIMES: tuple[Runtime, ...] = (Runtime("torch", (), ()), Runtime("onnxruntime", (".onnx",), ("float32",)),
                                 Runtime("aoti", (".pt2",), _BUILT), Runtime("tensorrt", (".engine", ".onnx"), _BUILT))
BACKENDS = tuple(r.name for r in RUNTIMES)
EXPORTED_SUFFIXES = (".onnx", ".pt2", ".engine")


class BackendModel(Protocol):
    task: str
    img_size: tuple[int, int]

    def __call__(self, x: torch.Tensor): ...


def runtime(name: str) -> Runtime:
    key = str(name).strip().lower()
    for found in RUNTIMES:
        if found.name == key:
            return found
    raise UsageError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}")


def check_backend(backend: str, dtype) -> str:
    """The backend name, or UsageError for an unknown one or a dtype it cannot run."""
    chosen = runtime(backend)
    name = chosen.name
    if name != "torch" and _precision(dtype) not in chosen.precisions:
        raise UsageError(f"backend {name} runs the precision of its exported file; --dtype {dtype} is for the torch "
                         "backend. For int8 or float16 export a file (sapiens2 export --dtype int8 ...) and pass it "
                         "with --checkpoint TASK=FILE")
    return name


def is_exported_file(spec) -> bool:
    return isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in EXPORTED_SUFFIXES \
        and Path(spec).is_file()


def _precision(dtype) -> str:
    text = str(dtype).replace("torch.", "").strip().lower() if dtype is not None else "float32"
    return {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(text, text)


def check_backend_dtype(backend: str, dtype) -> str:
    """The precision an exported model is built in: float32 for onnxruntime; float32, float16 or bfloat16 for
    tensorrt (builder flags) and aoti (the compiled graph's). ``dtype``: a name, a torch dtype, or None (float32)."""
    return _precision(dtype) if len(runtime(backend).precisions) > 1 else "float32"


def load_backend_model(backend: str, task: str, spec, *, input_size: tuple[int, int] | None,
                       device: torch.device, rope_dtype: str = "bf16", cache_dir=None, export_cache=None,
                       threads: int | None = None, dtype=None) -> BackendModel:
    """The ``backend`` model for ``task`` from ``spec``: an exported file (loaded, checked against task and input
    size), or a checkpoint path / published name / model object, exported once into the cache, then loaded. A
    cache hit loads no torch model: the key is the checkpoint's identity and the *requested* input size.
    ``dtype``: the tensorrt engine's or aoti package's precision (float32, float16, bfloat16); onnxruntime runs
    float32 exports (an int8 file is passed as ``spec``)."""
    from sapiens2.export import load_exported

    chosen = runtime(backend)
    precision = check_backend_dtype(backend, dtype)
    if is_exported_file(spec):
        suffix = Path(spec).suffix.lower()
        if suffix not in chosen.files:
            raise UsageError(f"backend {chosen.name} runs {' or '.join(chosen.files)} files, not {Path(spec).name}")
        if chosen.name == "aoti":
            _check_aoti_file(Path(spec))
        if chosen.name != "tensorrt" or suffix == ".engine":
            return load_exported(spec, task=task, input_size=input_size, device=device, threads=threads)
        from sapiens2.export.exporter import checkpoint_identity

        return _engine_from_onnx(task, Path(spec), {"onnx_file": checkpoint_identity(spec)}, input_size, precision,
                                 device, export_cache)
    if chosen.name == "aoti":
        package, _ = _cached_export(task, spec, input_size=input_size, rope_dtype=rope_dtype, cache_dir=cache_dir,
                                    export_cache=export_cache, format="aoti", dtype=precision, device=device)
        return load_exported(package, task=task, input_size=input_size, device=device)
    onnx_file, identity = _cached_export(task, spec, input_size=input_size, rope_dtype=rope_dtype,
                                         cache_dir=cache_dir, export_cache=export_cache)
    if chosen.name == "tensorrt":
        return _engine_from_onnx(task, onnx_file, identity, input_size, precision, device, export_cache)
    return load_exported(onnx_file, task=task, input_size=input_size, device=device, threads=threads)


def _check_aoti_file(path: Path) -> None:
    from sapiens2.export import read_export_metadata

    found = read_export_metadata(path).format
    if found != "aoti":
        raise UsageError(f"{path.name} is a {found} export, not an AOTInductor package: backend aoti runs the .pt2 "
                         "of sapiens2 export --format aoti (a torch-export .pt2 holds a program, not compiled code)")


def _cached_export(task: str, spec, *, input_size, rope_dtype: str, cache_dir, export_cache, format: str = "onnx",
                   dtype: str = "float32", device: torch.device | str = "cpu") -> tuple[Path, dict]:
    """(the ``format`` export of ``spec`` in the cache, exported now on a miss; the model's identity). ONNX: float32,
    on the CPU; aoti: ``dtype``, compiled for ``device`` on this machine (the key holds what it is tied to)."""
    from sapiens2.export import export_model
    from sapiens2.export.cache import cache_path, module_identity
    from sapiens2.export.exporter import checkpoint_identity, load_for_export
    from sapiens2.export.metadata import SUFFIXES

    if isinstance(spec, nn.Module):
        model, identity = spec, module_identity(spec)
    else:
        from sapiens2.checkpoints import resolve_checkpoint

        resolved = resolve_checkpoint(spec, task=task, cache_dir=cache_dir).path  # downloads a published name once
        model, identity, spec = None, checkpoint_identity(resolved), resolved
    hw = tuple(input_size) if input_size is not None else None
    where, tied_to = torch.device("cpu"), None
    if format == "aoti":
        from sapiens2.export.aoti import current_target

        where, tied_to = torch.device(device), current_target(device)
    target = cache_path(task, identity, hw, dtype=dtype, rope_dtype=rope_dtype, cache_dir=export_cache,
                        suffix=SUFFIXES[format], target=tied_to)
    if target.is_file():
        log.debug("using the cached export %s", target)
        return target, identity
    if model is None:
        model = load_for_export(task, spec, rope_dtype=rope_dtype, cache_dir=cache_dir)
    log.info("exporting %s to %s (once; cached at %s)", task, format, target)
    export_model(model.to(where).eval(), target, format=format, dtype=dtype, input_size=hw, source=identity)
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
