"""The ways the benchmark can run a model: a typed table of :class:`Backend` entries.

A backend turns a task model (float32, eval mode, on the device) and an example input batch into a
:class:`PreparedModel` whose ``run(batch)`` gives the outputs. Every backend receives the same input: the
normalised NCHW float32 image batch on the device, exactly what the PyTorch model takes. FLOPs are counted once on
the eager PyTorch model, so a backend whose work torch cannot see (ONNX Runtime, TensorRT) still gets achieved
FLOP/s. Adding one is one entry in :data:`BACKENDS`.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.errors import UsageError

__all__ = ["AOTI", "BACKENDS", "Backend", "BackendOptions", "ONNXRUNTIME", "PRECISIONS", "PreparedModel", "TENSORRT",
           "TORCH", "TORCH_COMPILE", "backend_names", "find_backend", "quantize_dynamic_int8"]

PRECISIONS = ("float32", "bfloat16", "float16", "int8")


@dataclass(frozen=True)
class BackendOptions:
    """Settings some backends read: ``compile_mode`` (torch-compile), ``cache_dir`` (where exported files may be
    kept), ``extra`` (backend-specific, e.g. execution providers)."""

    compile_mode: str = "default"
    cache_dir: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedModel:
    """``run(batch)``: the normalised (N, 3, H, W) float32 batch on the device -> the model's outputs (a tensor or
    a tuple of tensors, any device; the benchmark synchronises the device after each call). ``note``: what was
    done to prepare it, for the report (e.g. "int8: 145 Linear layers quantised")."""

    run: Callable
    note: str = ""


@dataclass(frozen=True)
class Backend:
    """One way to run a model. ``precisions``: device type (cpu, cuda, mps) -> the precisions it runs there.
    ``prepare(model, example, dtype, options) -> PreparedModel`` (example: an input batch of the benchmarked shape
    on the device). ``missing()``: why it cannot run in this installation (an extra to install), else None."""

    name: str
    summary: str
    precisions: Mapping[str, tuple[str, ...]]
    prepare: Callable[..., PreparedModel]
    missing: Callable[[], str | None] = lambda: None

    def refusal(self, device_type: str, dtype: str) -> str | None:
        """Why ``dtype`` on ``device_type`` cannot be run by this backend, else None."""
        why = self.missing()
        if why:
            return why
        allowed = self.precisions.get(device_type, ())
        if dtype not in allowed:
            return (f"backend {self.name} does not run {dtype} on {device_type} "
                    f"(it runs {', '.join(allowed) or 'nothing'} there)")
        return None


def _autocast_run(model, device, dtype: str) -> Callable:
    from sapiens2.runtime import autocast

    amp = None if dtype == "float32" else getattr(torch, dtype)

    def run(batch):
        with torch.inference_mode(), autocast(device, amp):
            return model(batch)

    return run


def quantize_dynamic_int8(model):
    """A copy of ``model`` whose Linear layers are torch's dynamically quantised int8 Linear (weights int8 per
    tensor, activations quantised per batch at run time; CPU only). torch 2.13 still runs
    ``torch.ao.quantization.quantize_dynamic`` but deprecates it (moving to torchao): its warnings are silenced
    here and said once in the report note."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(_with_module_ffns(copy.deepcopy(model).cpu().float()), {torch.nn.Linear},
                                dtype=torch.qint8)


class _ModuleSwiGLU(nn.Module):
    """A SwiGLU FFN that calls its Linear modules. The model's own FFN reads their weights directly for speed,
    which a quantised Linear (packed int8 weights) does not offer. Same numbers in float32."""

    def __init__(self, w12: nn.Module, w3: nn.Module):
        super().__init__()
        self.w12, self.w3 = w12, w3

    def forward(self, x):
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def _with_module_ffns(model):
    """``model`` with every SwiGLU FFN replaced by one that calls its Linear modules (in place; returned)."""
    from sapiens2.models.block import SwiGLUFFN

    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, SwiGLUFFN):
                setattr(module, child_name, _ModuleSwiGLU(child.w12, child.w3))
    return model


def _prepare_torch(model, example, dtype: str, options: BackendOptions) -> PreparedModel:
    if dtype == "int8":
        quantised = quantize_dynamic_int8(model)
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        layers = sum(1 for m in quantised.modules() if isinstance(m, DynamicInt8Linear))
        run = _autocast_run(quantised, torch.device("cpu"), "float32")
        return PreparedModel(run, note=f"torch.ao dynamic int8: {layers} Linear layers (deprecated API in torch "
                                       f"{torch.__version__}; convolutions stay float32)")
    return PreparedModel(_autocast_run(model, example.device, dtype),
                         note="" if dtype == "float32" else f"torch.autocast {dtype}")


def _prepare_torch_compile(model, example, dtype: str, options: BackendOptions) -> PreparedModel:
    from sapiens2.inference.compile import CompileSettings, compile_model

    settings = CompileSettings(options.compile_mode, str(options.extra.get("compile_backend", "inductor")))
    compiled = compile_model(model, settings)
    run = _autocast_run(compiled, example.device, dtype)
    if settings.cuda_graphs:  # a replayed graph overwrites its outputs at the next call
        inner = run

        def run(batch):
            torch.compiler.cudagraph_mark_step_begin()
            return inner(batch)

    return PreparedModel(run, note=f"torch.compile mode={settings.mode} backend={settings.backend}")


def _compile_missing() -> str | None:
    return None if hasattr(torch, "compile") else f"torch {torch.__version__} has no torch.compile (needs >= 2.0)"


TORCH = Backend("torch", "PyTorch eager; bfloat16/float16 by torch.autocast, int8 by torch.ao dynamic quantisation "
                         "of Linear layers (CPU)",
                {"cpu": ("float32", "bfloat16", "int8"), "cuda": ("float32", "bfloat16", "float16"),
                 "mps": ("float32", "bfloat16", "float16")},
                _prepare_torch)
TORCH_COMPILE = Backend("torch-compile", "torch.compile (inductor), compiled once for the benchmarked shape",
                        {"cpu": ("float32", "bfloat16"), "cuda": ("float32", "bfloat16", "float16"),
                         "mps": ("float32", "bfloat16", "float16")},
                        _prepare_torch_compile, missing=_compile_missing)



def cached_export(model, hw: tuple[int, int], options: BackendOptions, *, format: str = "onnx",
                        dtype: str = "float32", device: torch.device | str = "cpu") -> tuple[Path, float]:
    """(the dynamic-batch export of ``model`` at ``hw`` in the export cache, seconds spent exporting: 0 on a hit).
    Keyed by a hash of the weights, so every batch size and later run reuses one export. ONNX: float32, exported on
    the CPU (int8 and TensorRT start from it); aoti: a package in ``dtype`` compiled for ``device`` (the key holds
    the machine it is tied to)."""
    from sapiens2.export import export_model
    from sapiens2.export.cache import cache_path, module_identity
    from sapiens2.export.exporter import model_task
    from sapiens2.export.metadata import SUFFIXES

    identity = module_identity(model)
    target = None
    if format == "aoti":
        from sapiens2.export.aoti import current_target

        target = current_target(device)
    path = cache_path(model_task(model), identity, hw, dtype=dtype, cache_dir=options.cache_dir,
                      suffix=SUFFIXES[format], target=target)
    if path.is_file():
        return path, 0.0
    result = export_model(model.to(device).float(), path, format=format, dtype=dtype, input_size=hw, source=identity)
    return path, result.seconds


def _prepare_onnxruntime(model, example, dtype: str, options: BackendOptions) -> PreparedModel:
    """The export cache's float32 ONNX of the model at the benchmarked shape (dynamic batch: one export serves every
    batch size; ``options.cache_dir`` or the default export cache), run in an ONNX Runtime session. int8: quantised
    from that file (cached too): dynamic, or static when ``options.extra["calibrate"]`` names a folder of images."""
    from sapiens2.export import load_exported
    from sapiens2.export.cache import cache_path, folder_identity
    from sapiens2.export.exporter import model_task, quantize_exported

    device = example.device
    hw = (int(example.shape[-2]), int(example.shape[-1]))
    path, seconds = cached_export(model, hw, options)
    model.to(device)
    what = f"exported in {seconds:.1f} s" if seconds else "cached export"
    if dtype == "int8":
        calibrate = options.extra.get("calibrate")
        source = read_identity(path)
        path_q = cache_path(model_task(model), source, hw, dtype="int8",
                            quantization="static" if calibrate else "dynamic",
                            calibration=folder_identity(calibrate) if calibrate else None, cache_dir=options.cache_dir)
        if not path_q.is_file():
            quantize_exported(path, path_q, calibrate=calibrate)
            what += ", quantised"
        path = path_q
    exported = load_exported(path, device=device)
    kind = f"{exported.metadata.quantization} int8" if dtype == "int8" else dtype
    return PreparedModel(exported, note=f"ONNX Runtime {kind}: {what}, {path.stat().st_size / 2**20:.1f} MiB")


def read_identity(path: Path) -> dict:
    """What an exported file was exported from (its metadata's ``source``), plus the file itself."""
    from sapiens2.export import read_export_metadata
    from sapiens2.export.exporter import checkpoint_identity

    return {"source": read_export_metadata(path).source, "file": checkpoint_identity(path)}


def _onnxruntime_missing() -> str | None:
    import importlib.util

    needed = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    return f"needs {', '.join(needed)}: pip install 'sapiens2[onnx]'" if needed else None


ONNXRUNTIME = Backend("onnxruntime", "ONNX Runtime session on the graph sapiens2 export writes (int8: ONNX Runtime "
                                     "quantisation, static with --calibrate)",
                      {"cpu": ("float32", "float16", "int8"), "cuda": ("float32", "float16")},
                      _prepare_onnxruntime, missing=_onnxruntime_missing)


def _prepare_tensorrt(model, example, dtype: str, options: BackendOptions) -> PreparedModel:
    """A TensorRT engine for this GPU built from the cached float32 ONNX export (``dtype``: builder precision),
    cached by weights, shape, precision, GPU and TensorRT version."""
    from sapiens2.export import load_exported, read_export_metadata
    from sapiens2.export.cache import cache_path
    from sapiens2.export.exporter import model_task
    from sapiens2.export.tensorrt import build_engine, current_target

    import onnx

    device = example.device
    target = current_target(device)
    hw = (int(example.shape[-2]), int(example.shape[-1]))
    onnx_path, seconds = cached_export(model, hw, options)
    model.to(device)
    engine = cache_path(model_task(model), read_identity(onnx_path), hw, dtype=dtype, cache_dir=options.cache_dir,
                        suffix=".engine", target=target)
    note = "cached engine"
    if not engine.is_file():
        from dataclasses import replace

        build_engine(onnx.load(str(onnx_path)), replace(read_export_metadata(onnx_path), dtype=dtype), engine,
                     device=device)
        note = "engine built"
    return PreparedModel(load_exported(engine, device=device),
                         note=f"TensorRT {target['tensorrt']} {dtype} ({note}, {engine.stat().st_size / 2**20:.1f} MiB)")


def _tensorrt_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT: pip install 'sapiens2[tensorrt]' (Linux with an NVIDIA GPU)"
    return _onnxruntime_missing()


TENSORRT = Backend("tensorrt", "TensorRT engine built on this GPU from the exported ONNX graph (float16/bfloat16 by "
                               "builder flags), cached per GPU and TensorRT version",
                   {"cuda": ("float32", "float16", "bfloat16")}, _prepare_tensorrt, missing=_tensorrt_missing)


def _prepare_aoti(model, example, dtype: str, options: BackendOptions) -> PreparedModel:
    """The model compiled once by AOTInductor for this machine and the benchmarked device and precision (cached by
    weights, shape, dtype and what the package is tied to), loaded from its package."""
    from sapiens2.export import load_exported

    device = example.device
    hw = (int(example.shape[-2]), int(example.shape[-1]))
    path, seconds = cached_export(model, hw, options, format="aoti", dtype=dtype, device=device)
    model.to(device)
    what = f"compiled in {seconds:.1f} s" if seconds else "cached package"
    return PreparedModel(load_exported(path, device=device),
                         note=f"AOTInductor {dtype}: {what}, {path.stat().st_size / 2**20:.1f} MiB")


def _aoti_missing() -> str | None:
    from sapiens2.errors import ExportError
    from sapiens2.export.aoti import require_compiler

    try:
        require_compiler()
    except ExportError as exc:
        return str(exc)
    return None


AOTI = Backend("aoti", "AOTInductor package (sapiens2 export --format aoti): compiled ahead of time for this machine, "
                       "bfloat16/float16 compiled in; cached by weights, shape and machine",
               {"cpu": ("float32", "bfloat16"), "cuda": ("float32", "bfloat16", "float16")},
               _prepare_aoti, missing=_aoti_missing)

BACKENDS: tuple[Backend, ...] = (TORCH, TORCH_COMPILE, ONNXRUNTIME, AOTI, TENSORRT)


def backend_names() -> tuple[str, ...]:
    return tuple(b.name for b in BACKENDS)


def find_backend(name: str) -> Backend:
    key = name.strip().lower()
    for backend in BACKENDS:
        if backend.name == key:
            return backend
    raise UsageError(f"unknown backend {name!r}; use one of {', '.join(backend_names())}")
