"""TensorRT engines: built from the exported float32 ONNX graph on the GPU that will run them, stored with their
metadata, refused on any other GPU or TensorRT version.

File layout (``.engine``): ``MAGIC`` (12 bytes), the metadata JSON's length (4 bytes, little-endian), the
:class:`ExportMetadata` JSON, then TensorRT's serialized plan unchanged (``plan_bytes(path)`` gives it back for
``trtexec --loadEngine`` and other tools). The metadata's ``engine`` entry records what a plan is tied to: the GPU
name, its compute capability, the TensorRT version, the precision flags and the batch range of the optimisation
profile. A plan only runs where it was built (TensorRT picks kernels for that GPU): :func:`check_engine_target`
compares that entry with this machine and names the fix (rebuild here) instead of letting TensorRT fail or run a
mis-tuned plan.

Precision: the ONNX graph stays float32 and the builder may use float16 (``--dtype float16``, flag FP16) or
bfloat16 (``--dtype bfloat16``, flag BF16) kernels where it is faster; ``float32`` builds TF32-free float32.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import ExportedModelError, ExportError, MissingExtraError
from ..io.writers import atomic_path
from .metadata import ExportMetadata

log = logging.getLogger(__name__)

MAGIC = b"SAPIENS2TRT\x00"
TENSORRT_EXTRA = "pip install 'sapiens2[tensorrt]'"
REBUILD = "rebuild it on this machine: sapiens2 export --format tensorrt ... (or delete it from the export cache)"
DYNAMIC_BATCH = (1, 8, 32)  # min / opt / max batch of a dynamic-batch engine's optimisation profile
ENGINE_DTYPES = ("float32", "float16", "bfloat16")


def require_tensorrt(device: torch.device | str | None = None):
    """The ``tensorrt`` module; MissingExtraError naming the extra when it is not installed, ExportError when there
    is no CUDA GPU to build or run an engine on."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingExtraError(f"TensorRT (--format tensorrt, --backend tensorrt) is not installed: {TENSORRT_EXTRA} "
                                "(Linux with an NVIDIA GPU only), or use --backend onnxruntime") from None
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        raise ExportError("TensorRT builds and runs engines on a CUDA GPU and "
                          + ("this machine has none" if not torch.cuda.is_available() else f"the device is {device}")
                          + ": use --device cuda, or export --format onnx here and build the engine on the GPU "
                            "machine")
    return trt


def current_target(device: torch.device | str = "cuda") -> dict:
    """What an engine built here is tied to: GPU name, compute capability, TensorRT version."""
    trt = require_tensorrt(device)
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}",
            "tensorrt": trt.__version__}


def check_engine_target(meta: ExportMetadata, path, target: dict) -> None:
    """ExportedModelError naming the fix when the engine in ``path`` was built for another GPU (name or compute
    capability) or another TensorRT version than ``target`` (:func:`current_target`)."""
    built = meta.engine or {}
    if not built:
        raise ExportedModelError(f"{path}: its metadata does not say which GPU it was built for; {REBUILD}")
    for key, what in (("gpu", "GPU"), ("compute_capability", "compute capability"),
                      ("tensorrt", "TensorRT version")):
        if str(built.get(key)) != str(target.get(key)):
            raise ExportedModelError(f"{path} was built for {what} {built.get(key)!r} and this machine has "
                                     f"{target.get(key)!r}: a TensorRT engine only runs on the GPU model and TensorRT "
                                     f"version it was built with; {REBUILD}")


def write_engine(output: str | os.PathLike, plan: bytes, meta: ExportMetadata) -> None:
    header = meta.to_json().encode()
    with atomic_path(Path(output)) as temp:
        with open(temp, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<I", len(header)))
            f.write(header)
            f.write(plan)


def read_engine_header(path: str | os.PathLike) -> tuple[ExportMetadata, int]:
    """(metadata, offset of the TensorRT plan) of a sapiens2 engine file; ExportedModelError for anything else."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4)
        if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
            raise ExportedModelError(f"{path} is not a sapiens2 TensorRT engine (a bare TensorRT plan carries no "
                                     f"sapiens2 metadata); {REBUILD}")
        (size,) = struct.unpack("<I", head[len(MAGIC):])
        text = f.read(size)
    if len(text) != size:
        raise ExportedModelError(f"{path} is truncated (its metadata is cut short); {REBUILD}")
    try:
        meta = ExportMetadata.from_json(text.decode())
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ExportedModelError(f"{path}: unreadable sapiens2 metadata ({exc}); {REBUILD}") from None
    return meta, len(MAGIC) + 4 + size


def plan_bytes(path: str | os.PathLike) -> bytes:
    """The TensorRT plan inside a sapiens2 engine file (what ``trtexec --loadEngine`` reads)."""
    _, offset = read_engine_header(path)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def build_engine(onnx_proto, meta: ExportMetadata, output: str | os.PathLike, *, device="cuda",
                 workspace_bytes: int = 8 << 30) -> ExportMetadata:
    """Build a TensorRT engine for this GPU from the float32 ONNX graph of ``meta``'s model and write it (with its
    metadata, ``engine`` filled in) to ``output``. ``meta.dtype``: float32, float16 or bfloat16 (builder flags)."""
    trt = require_tensorrt(device)
    import onnx

    if meta.dtype not in ENGINE_DTYPES:
        raise ExportError(f"TensorRT engines are built for {', '.join(ENGINE_DTYPES)}, not {meta.dtype}")
    target = current_target(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory(prefix="sapiens2-trt-") as folder:  # from a file: weights over 2 GiB parse too
        staged = Path(folder) / "model.onnx"
        onnx.save(onnx_proto, str(staged), save_as_external_data=onnx_proto.ByteSize() > 1_800_000_000,
                  location="model.onnx.data")
        if not parser.parse_from_file(str(staged)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    flags = []
    if meta.dtype == "float16":
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    elif meta.dtype == "bfloat16":
        config.set_flag(trt.BuilderFlag.BF16)
        flags.append("BF16")
    h, w = meta.input_size
    if meta.batch == "dynamic":
        profile = builder.create_optimization_profile()
        profile.set_shape("image", *((n, 3, h, w) for n in DYNAMIC_BATCH))
        config.add_optimization_profile(profile)
        batch_range = [DYNAMIC_BATCH[0], DYNAMIC_BATCH[-1]]
    else:
        batch_range = [int(meta.batch), int(meta.batch)]
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT could not build an engine (see its log above)")
    meta = replace(meta, format="tensorrt", engine={**target, "flags": flags, "batch_range": batch_range})
    write_engine(output, bytes(plan), meta)
    return meta


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "BOOL": torch.bool}


def engine_runner(path: str | os.PathLike, meta: ExportMetadata, offset: int, device):
    """``run(x) -> [outputs]`` executing the engine on ``device``'s current CUDA stream (no host sync)."""
    trt = require_tensorrt(device)
    device = torch.device(device)
    with open(path, "rb") as f:
        f.seek(offset)
        plan = f.read()
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportedModelError(f"{path}: TensorRT {trt.__version__} could not deserialize the engine; {REBUILD}")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if tuple(outputs) != meta.output_names:
        raise ExportedModelError(f"{path}: engine outputs {outputs} do not match its metadata "
                                 f"{list(meta.output_names)}; {REBUILD}")
    lo, hi = (meta.engine or {}).get("batch_range", [1, DYNAMIC_BATCH[-1]])

    def run_one(x: torch.Tensor):
        x = x.to(device=device, dtype=torch.float32).contiguous()
        context.set_input_shape("image", tuple(x.shape))
        context.set_tensor_address("image", x.data_ptr())
        outs = []
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            dtype = _TORCH_DTYPES.get(engine.get_tensor_dtype(name).name, torch.float32)
            out = torch.empty(shape, dtype=dtype, device=device)
            context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        if not context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
            raise ExportedModelError(f"{path}: TensorRT failed to run the engine on a {tuple(x.shape)} batch")
        return [o.float() for o in outs]

    def run(x: torch.Tensor):
        if x.shape[0] <= hi:
            return run_one(x)
        parts = [run_one(chunk) for chunk in x.split(hi)]
        return [torch.cat(column) for column in zip(*parts)]

    del lo
    return run


def engine_summary(meta: ExportMetadata) -> str:
    e = meta.engine or {}
    return (f"{meta.task} {meta.arch} TensorRT {e.get('tensorrt')} {meta.dtype} for {e.get('gpu')} "
            f"(sm {e.get('compute_capability')}), batch {json.dumps(e.get('batch_range'))}")
