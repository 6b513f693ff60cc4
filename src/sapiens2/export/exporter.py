"""Writing exported files: ONNX (float32 / float16 / int8 dynamic or static), torch.export ``.pt2``, AOTInductor
``.pt2`` packages, TensorRT.

Every format starts from one ``torch.export.export`` of :class:`ExportWrapper` (the model, its input cast to the
export dtype, its outputs cast back to float32 as a tuple). ONNX uses the current (dynamo) exporter on that
program; the TorchScript exporter is not used (it fails on this model: SDPA with ``enable_gqa``). The exporter's
own graph optimiser is off: on a ViT it spends minutes in pattern matching, and ONNX Runtime optimises the graph
itself at load time. Files are written to a temporary sibling and renamed: nothing is ever half-written.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError, MissingExtraError, UsageError
from ..io.writers import atomic_path
from ..runtime import PIXEL_MEAN, PIXEL_STD, parse_precision
from .metadata import BACKBONE, FORMAT_VERSION, FORMATS, METADATA_KEY, OUTPUTS, PT2_EXTRA_FILE, ExportMetadata, names_for
from .onnx_graph import lower_bfloat16

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DTYPES = ("float32", "float16", "bfloat16", "int8")
# Which dtypes each format writes: ONNX Runtime's CPU kernels have no bfloat16 MatMul; torch.export keeps torch's
# own quantisation out of scope (int8 is ONNX Runtime's).
FORMAT_DTYPES = {"onnx": ("float32", "float16", "int8"), "torch-export": ("float32", "float16", "bfloat16"),
                 "aoti": ("float32", "float16", "bfloat16"),
                 "tensorrt": ("float32", "float16", "bfloat16")}  # TensorRT: builder precision flags
ONNX_EXTRA = "pip install 'sapiens2[onnx]'"
MAX_BATCH = 4096  # the dynamic batch dimension's upper bound
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit: larger weights go to a side-car FILE.data


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: ExportMetadata
    seconds: float

    @property
    def bytes(self) -> int:
        extra = self.path.with_name(self.path.name + ".data")
        return self.path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


class ExportWrapper(nn.Module):
    """What is exported: float32 NCHW in, the model run in ``dtype``, a tuple of float32 outputs."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image.to(self.dtype))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.float() for o in out)


def require_onnx():
    """(onnx, onnxruntime), or a MissingExtraError naming the extra."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError(f"ONNX export and the onnxruntime backend need onnx and onnxruntime ({exc.name} is "
                                f"not installed): {ONNX_EXTRA}") from None
    return onnx, onnxruntime


def model_task(model: nn.Module) -> str:
    """"backbone" for a backbone, else the task model's task."""
    if hasattr(model, "task") and hasattr(model, "backbone"):
        return model.task
    if hasattr(model, "forward_tokens"):
        return BACKBONE
    raise ExportError(f"cannot tell what {type(model).__name__} is: export a Sapiens2 backbone or task model "
                      "(sapiens2.load_model / load_backbone / build_model)")


def _backbone(model: nn.Module):
    return model.backbone if hasattr(model, "backbone") else model


def check_combination(format: str, dtype: str) -> None:
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}: use {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    if dtype not in FORMAT_DTYPES[format]:
        hint = {("onnx", "bfloat16"): "ONNX Runtime has no bfloat16 kernels for MatMul/Conv on CPU; use float32, "
                                      "int8 (quantised) or float16 (GPU), or --format torch-export",
                ("torch-export", "int8"): "int8 is ONNX Runtime quantisation: use --format onnx --dtype int8",
                ("aoti", "int8"): "int8 is ONNX Runtime quantisation: use --format onnx --dtype int8"}
        why = hint.get((format, dtype), f"{format} supports {', '.join(FORMAT_DTYPES[format])}")
        raise UsageError(f"--format {format} --dtype {dtype} is not supported: {why}")


def _parse_batch(batch) -> str | int:
    if batch is None or str(batch).strip().lower() == "dynamic":
        return "dynamic"
    try:
        n = int(batch)
    except ValueError:
        raise UsageError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if n < 1:
        raise UsageError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return n


def _versions() -> dict:
    from importlib import metadata

    out = {"torch": torch.__version__}
    for name in ("sapiens2", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def export_program(model: nn.Module, input_size: tuple[int, int], batch: str | int, dtype: torch.dtype):
    """``torch.export.export`` of the wrapped model at (H, W), batch dynamic or fixed."""
    wrapper = ExportWrapper(model, dtype).eval()
    n = 2 if batch == "dynamic" else int(batch)  # 2, not 1: a batch of 1 would be specialised
    example = torch.zeros(n, 3, *input_size, device=next(model.parameters()).device)
    shapes = ({0: torch.export.Dim("batch", max=MAX_BATCH)},) if batch == "dynamic" else None
    tokenizer = getattr(_backbone(model), "tokenizer", None)
    chunk = getattr(tokenizer, "chunk_size", None)
    try:
        if tokenizer is not None:  # one chunk of windows: a chunked split would fix the batch size in the graph
            tokenizer.chunk_size = 2**62
        return torch.export.export(wrapper, (example,), dynamic_shapes=shapes, strict=False)
    except Exception as exc:
        if batch == "dynamic":
            raise ExportError(f"torch.export could not trace a dynamic batch ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); export a fixed batch with "
                              "--batch N") from exc
        raise


def export_model(model: nn.Module, output: str | os.PathLike, *, format: str = "onnx", dtype: str = "float32",
                 input_size: tuple[int, int] | None = None, batch: str | int = "dynamic",
                 calibrate: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                 source: dict | None = None, max_calibration_images: int = 64) -> ExportResult:
    """Export a Sapiens2 backbone or task model (an ``nn.Module`` from ``load_model`` / ``load_backbone`` /
    ``build_model``) to ``output``.

    format: "onnx", "torch-export" (.pt2), "aoti" (AOTInductor .pt2 package, compiled for the model's device on this
        machine; needs a C++ compiler) or "tensorrt" (engine; needs TensorRT and CUDA).
    dtype: "float32", "float16", "bfloat16" (torch-export, aoti) or "int8" (ONNX Runtime quantisation: dynamic, or
        static calibrated on the images in ``calibrate`` through the task's own preprocessing).
    input_size: (H, W) of the graph (default: the size the model was trained at). batch: "dynamic" or N.
    The graph takes the normalised float32 NCHW image like the torch model and returns float32 outputs
    (``metadata.OUTPUTS``); the metadata travels inside the file. Raises UsageError for a bad combination,
    MissingExtraError for a missing optional dependency, ExportError when the export itself fails.
    """
    start = time.perf_counter()
    format = str(format).strip().lower()
    dtype = str(dtype).strip().lower()
    check_combination(format, dtype)
    batch = _parse_batch(batch)
    if calibrate is not None and dtype != "int8":
        raise UsageError("--calibrate is for --dtype int8 (static quantisation); drop it or add --dtype int8")
    if calibrate is not None and not Path(calibrate).is_dir():
        raise UsageError(f"--calibrate {str(calibrate)!r} is not a folder of images")
    task = model_task(model)
    backbone = _backbone(model)
    hw = tuple(int(v) for v in (input_size or backbone.img_size))
    backbone.grid_size(*hw)  # InputSizeError for sides the model cannot tile
    if task == "pointmap":
        model.decode_head.check_feature_grid(*backbone.grid_size(*hw), image_hw=hw)
    if format in ("onnx", "tensorrt"):
        require_onnx()
    if format == "tensorrt":
        from .tensorrt import require_tensorrt

        require_tensorrt()
    if format == "aoti":  # no compiler, or a device AOTInductor does not compile for: say so before exporting
        from .aoti import current_target, require_compiler

        require_compiler()
        current_target(next(model.parameters()).device)
    meta = ExportMetadata(
        task=task, arch=backbone.arch.name, input_size=hw, batch=batch, format=format, dtype=dtype,
        outputs=OUTPUTS[task], mean=tuple(PIXEL_MEAN), std=tuple(PIXEL_STD), use_tokenizer=backbone.use_tokenizer,
        rope_dtype=str(backbone.rope_dtype).replace("torch.", ""), names=names_for(task),
        quantization=("static" if calibrate is not None else "dynamic") if dtype == "int8" else None,
        opset=opset if format in ("onnx", "tensorrt") else None, source=dict(source or {}), versions=_versions())
    # int8 quantises a float32 graph; TensorRT lowers a float32 graph by its builder's precision flags
    torch_dtype = torch.float32 if dtype == "int8" or format == "tensorrt" else parse_precision(dtype)
    model = model.eval()
    original = next(model.parameters()).dtype
    if torch_dtype != original:
        model = _converted_copy(model, torch_dtype)
    output = Path(output)
    program = export_program(model, hw, batch, torch_dtype)
    if format == "torch-export":
        with atomic_path(output) as temp:
            torch.export.save(program, str(temp), extra_files={PT2_EXTRA_FILE: meta.to_json()})
    elif format == "aoti":
        from .aoti import compile_package

        meta = compile_package(program, meta, output, device=next(model.parameters()).device)
    elif format == "onnx":
        proto = to_onnx_proto(program, meta)
        if dtype == "int8":
            proto = quantize(proto, meta, model if calibrate is not None else None, calibrate,
                             max_calibration_images)
        save_onnx(proto, output, meta)
    else:
        from .tensorrt import build_engine

        meta = build_engine(to_onnx_proto(program, replace(meta, dtype="float32")), meta, output)
    seconds = time.perf_counter() - start
    log.info("exported %s %s (%s, %s, %dx%d) to %s in %.1f s", meta.task, meta.arch, format, dtype, *hw, output,
             seconds)
    return ExportResult(output, meta, seconds)


def _converted_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    import copy

    converted = copy.deepcopy(model).to(dtype)
    rope = getattr(_backbone(converted), "rope_embed", None)
    if rope is not None:  # RoPE keeps its own dtype (bfloat16, as trained), not the weights'
        rope.periods.data = _backbone(model).rope_embed.periods.detach().clone()
    return converted


def to_onnx_proto(program, meta: ExportMetadata):
    """The ONNX ``ModelProto`` of an exported program: bfloat16 arithmetic lowered, metadata attached, checked."""
    onnx, _ = require_onnx()
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError:
        raise MissingExtraError(f"torch's ONNX exporter needs onnxscript: {ONNX_EXTRA}") from None
    import warnings

    dynamic = meta.batch == "dynamic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, dynamo=True, optimize=False, opset_version=meta.opset,
                                         input_names=["image"], output_names=list(meta.output_names),
                                         verbose=False, external_data=False)
    proto = onnx_program.model_proto
    if dynamic:  # name the symbolic batch dimension the same on every input and output
        for value in list(proto.graph.input) + list(proto.graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            if not dim.HasField("dim_value"):
                dim.dim_param = "batch"
    lowered = lower_bfloat16(proto)
    log.debug("lowered %d bfloat16 nodes to float32 arithmetic", lowered)
    set_metadata(proto, meta)
    return proto


def set_metadata(proto, meta: ExportMetadata) -> None:
    props = {METADATA_KEY: meta.to_json(), "task": meta.task, "arch": meta.arch,
             "input_size": f"{meta.input_size[0]}x{meta.input_size[1]}", "dtype": meta.dtype}
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "sapiens2"


def save_onnx(proto, output: Path, meta: ExportMetadata) -> None:
    """Check and write atomically; weights over ~1.8 GB go to ``output.data`` (protobuf's 2 GiB limit)."""
    onnx, _ = require_onnx()
    external = proto.ByteSize() > EXTERNAL_DATA_BYTES
    output.parent.mkdir(parents=True, exist_ok=True)
    if not external:
        onnx.checker.check_model(proto)
        with atomic_path(output) as temp:
            onnx.save(proto, str(temp))
        output.with_name(output.name + ".data").unlink(missing_ok=True)
        return
    data_name = output.name + ".data"
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as folder:
        staged = Path(folder) / output.name
        onnx.save(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
        onnx.checker.check_model(str(staged))
        os.replace(Path(folder) / data_name, output.parent / data_name)  # data first: the .onnx appears last
        os.replace(staged, output)


# ------------------------------------------------------------------------------------------------ int8
def quantize(proto, meta: ExportMetadata, model, calibrate, max_images: int):
    """int8 with ONNX Runtime: dynamic (weights int8, activations quantised per batch at run time; MatMul/Gemm) or,
    with ``calibrate``, static QDQ (activation ranges from the calibration images; MatMul, Conv and more)."""
    onnx, _ = require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="sapiens2-quant-") as folder:
        raw, source, target = Path(folder) / "raw.onnx", Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        onnx.save(proto, str(raw))
        # ONNX Runtime's own pre-processing: folds the exporter's Transpose(weight) into constant weights (the
        # quantiser only quantises MatMuls whose weight is an initializer) and adds shapes
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(raw), str(source), skip_symbolic_shape=True)
        if meta.quantization == "dynamic":
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             per_channel=True)
        else:
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

            reader = CalibrationImages(meta, calibrate, max_images)
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=["MatMul", "Conv"], calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(str(target))
    set_metadata(quantized, meta)
    return quantized


def quantize_exported(source: str | os.PathLike, output: str | os.PathLike, *, calibrate=None,
                      max_calibration_images: int = 64) -> ExportResult:
    """int8 of an already exported float32 ``.onnx`` file (dynamic, or static with ``calibrate``), without exporting
    the model again: the quantisation takes seconds where the export takes minutes, so one float32 export serves
    every int8 variant (the benchmark and ``benchmarks/int8_quality.py`` do this)."""
    from .loaded import read_export_metadata

    start = time.perf_counter()
    onnx, _ = require_onnx()
    source, output = Path(source), Path(output)
    meta = read_export_metadata(source)
    if meta.format != "onnx" or meta.dtype != "float32":
        raise UsageError(f"{source} is a {meta.format} {meta.dtype} export: int8 quantisation starts from a float32 "
                         ".onnx file (sapiens2 export --format onnx --dtype float32)")
    if calibrate is not None and not Path(calibrate).is_dir():
        raise UsageError(f"--calibrate {str(calibrate)!r} is not a folder of images")
    meta = replace(meta, dtype="int8", quantization="static" if calibrate is not None else "dynamic",
                   versions=_versions())
    save_onnx(quantize(onnx.load(str(source)), meta, None, calibrate, max_calibration_images), output, meta)
    return ExportResult(output, meta, time.perf_counter() - start)


def calibration_input(task: str, rgb, input_hw: tuple[int, int]):
    """One image (H, W, 3) uint8 -> the (h, w, 3) uint8 model input, through the task's own preprocessing (seg
    stretch, dense pad-resize; pose and the backbone: the whole image as one stretched crop)."""
    from ..tasks.image_tasks import IMAGE_TASKS
    from ..tasks.preprocess import stretch_resize
    from ..tasks.seg import seg_input

    if task == "seg":
        return seg_input(rgb, input_hw)
    if task in IMAGE_TASKS:
        return IMAGE_TASKS[task].prepare(rgb, input_hw)[0]
    import cv2

    return stretch_resize(rgb, input_hw, cv2.INTER_LINEAR)


class CalibrationImages:
    """An ONNX Runtime ``CalibrationDataReader`` over the images of a folder (at most ``max_images``)."""

    def __init__(self, meta: ExportMetadata, folder, max_images: int):
        from ..io import discover_inputs, load_image

        images = discover_inputs(Path(folder)).images[:max_images]
        if not images:
            raise UsageError(f"--calibrate {str(folder)!r} holds no images (png, jpg, ...)")
        self._meta = meta
        self._load = load_image
        self._paths = [item.path for item in images]
        self._next = 0

    def get_next(self):
        from ..tasks.preprocess import to_model_batch

        if self._next >= len(self._paths):
            return None
        path = self._paths[self._next]
        self._next += 1
        rgb = self._load(path).rgb
        batch = to_model_batch([calibration_input(self._meta.task, rgb, self._meta.input_size)])
        if self._meta.batch != "dynamic":
            batch = batch.expand(int(self._meta.batch), -1, -1, -1)
        return {"image": batch.numpy()}

    def rewind(self):
        self._next = 0


# ------------------------------------------------------------------------------------------------ from a checkpoint
def checkpoint_identity(path_or_name) -> dict:
    """What names the weights: a file by resolved path, size and modification time; a published name by itself."""
    path = Path(os.fspath(path_or_name)).expanduser()
    if path.exists():
        stat = path.stat()
        return {"file": str(path.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}
    return {"name": str(path_or_name)}


def load_for_export(task: str, path_or_name, *, rope_dtype: str = "bf16", cache_dir=None, device="cpu") -> nn.Module:
    """The torch model to export: a backbone (``task`` "backbone" / "features") or a task model."""
    from ..checkpoints import load_backbone, load_model

    if task == BACKBONE:
        return load_backbone(path_or_name, rope_dtype=rope_dtype, cache_dir=cache_dir, device=device)
    return load_model(path_or_name, task=task, rope_dtype=rope_dtype, cache_dir=cache_dir, device=device)


def export_checkpoint(task: str, path_or_name, output, *, rope_dtype: str = "bf16", cache_dir=None,
                      **options) -> ExportResult:
    """:func:`export_model` of the model in a checkpoint file or published name (``task``: "backbone" or a task;
    the file's task must agree). ``options``: those of :func:`export_model`."""
    model = load_for_export(task, path_or_name, rope_dtype=rope_dtype, cache_dir=cache_dir)
    return export_model(model, output, source=checkpoint_identity(path_or_name), **options)
