"""Reading exported files back: their metadata, checked against what the caller expects, and a callable that takes
the normalised NCHW float tensor and returns what the torch model returns (a tensor, or a tuple for pointmap)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ExportedModelError
from .metadata import FORMAT_VERSION, METADATA_KEY, PT2_EXTRA_FILE, ExportMetadata

REEXPORT = "re-export it with `sapiens2 export`"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def read_export_metadata(path: str | os.PathLike) -> ExportMetadata:
    """The metadata of an exported .onnx, .pt2 (torch.export or AOTInductor package) or TensorRT engine (the header
    before its plan); ExportedModelError for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(f"exported model {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return _pt2_metadata(path)
    if suffix in ENGINE_SUFFIXES:
        from .tensorrt import read_engine_header

        meta, _ = read_engine_header(path)
        return _parse(meta.to_json(), path)
    return _parse(_onnx_props(path).get(METADATA_KEY), path)


def _onnx_props(path: Path) -> dict[str, str]:
    from .exporter import require_onnx

    onnx, _ = require_onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportedModelError(f"{path} is not an ONNX file ({type(exc).__name__}); {REEXPORT}") from None
    if not proto.graph.node:
        raise ExportedModelError(f"{path} is not an ONNX model (no graph); {REEXPORT}")
    props = {p.key: p.value for p in proto.metadata_props}
    props["__opset__"] = str(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0))
    return props


def _pt2_metadata(path: Path) -> ExportMetadata:
    import zipfile

    from .aoti import package_metadata_text

    if not zipfile.is_zipfile(path):
        raise ExportedModelError(f"{path} is not a torch.export archive (.pt2); {REEXPORT} --format torch-export")
    with zipfile.ZipFile(path) as archive:
        found = [n for n in archive.namelist() if n.endswith("/extra/" + PT2_EXTRA_FILE) or n == PT2_EXTRA_FILE]
        text = archive.read(found[0]).decode() if found else package_metadata_text(archive)
    return _parse(text, path)


def _parse(text: str | None, path: Path) -> ExportMetadata:
    if not text:
        raise ExportedModelError(f"{path} has no sapiens2 metadata (not written by `sapiens2 export`); {REEXPORT}")
    try:
        meta = ExportMetadata.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportedModelError(f"{path}: unreadable sapiens2 metadata ({exc}); {REEXPORT}") from None
    if meta.format_version > FORMAT_VERSION:
        raise ExportedModelError(f"{path} was written by a newer sapiens2 (export format {meta.format_version}, this "
                                 f"one reads up to {FORMAT_VERSION}); upgrade sapiens2 or {REEXPORT}")
    return meta


def check_metadata(meta: ExportMetadata, path, *, task: str | None = None,
                   input_size: tuple[int, int] | None = None) -> None:
    """ExportedModelError when the file is for another task or input size than the caller's."""
    if task is not None and meta.task != task:
        raise ExportedModelError(f"{path} is an exported {meta.task} model, not {task}; pass the {task} export "
                                 f"(or {REEXPORT} --task {task})")
    if input_size is not None and tuple(meta.input_size) != tuple(input_size):
        h, w = meta.input_size
        raise ExportedModelError(f"{path} was exported for input size {h}x{w}, not {input_size[0]}x{input_size[1]}; "
                                 f"use --input-size {h}x{w} or {REEXPORT} --input-size "
                                 f"{input_size[0]}x{input_size[1]}")


class ExportedModel:
    """An exported model as a callable: ``model(x)`` for a float (B, 3, H, W) tensor -> float32 tensor(s) on x's
    device, the torch model's output structure. ``task``, ``img_size`` and ``metadata`` say what it is."""

    def __init__(self, path: Path, metadata: ExportMetadata, run):
        self.path = path
        self.metadata = metadata
        self._run = run
        self.task = metadata.task
        self.img_size = tuple(metadata.input_size)

    def __call__(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.img_size:
            raise ExportedModelError(f"{self.path} takes (B, 3, {self.img_size[0]}, {self.img_size[1]}) images, got "
                                     f"{tuple(x.shape)}")
        batch = self.metadata.batch
        if batch != "dynamic" and x.shape[0] != batch:
            return self._in_fixed_batches(x, int(batch))
        outs = [o.to(x.device) for o in self._run(x)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _in_fixed_batches(self, x: torch.Tensor, batch: int):
        parts = []
        for chunk in x.split(batch):
            n = chunk.shape[0]
            if n < batch:  # pad the last chunk to the file's fixed batch
                chunk = torch.cat([chunk, chunk[-1:].expand(batch - n, -1, -1, -1)])
            parts.append([o[:n] for o in self._run(chunk)])
        outs = [torch.cat(column).to(x.device) for column in zip(*parts)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    # the Predictor treats it like a module
    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def __repr__(self) -> str:
        m = self.metadata
        return f"ExportedModel({self.path.name}: {m.task} {m.arch} {m.format} {m.dtype} {m.input_size})"


def onnx_providers(device: torch.device | str = "cpu") -> list[str]:
    """CUDA's provider first when the device is CUDA and this onnxruntime has it, then the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if torch.device(device).type == "cuda" else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def load_exported(path: str | os.PathLike, *, task: str | None = None, input_size: tuple[int, int] | None = None,
                  device: torch.device | str = "cpu", threads: int | None = None) -> ExportedModel:
    """Load an exported .onnx (ONNX Runtime session), .pt2 (``torch.export.load``; an AOTInductor package:
    ``aoti_load_package``, on ``device``) or TensorRT engine after checking its metadata
    against ``task`` / ``input_size``; ExportedModelError (naming the fix) for a corrupt, foreign or mismatched
    file, MissingExtraError when onnxruntime is missing."""
    path = Path(path)
    meta = read_export_metadata(path)
    check_metadata(meta, path, task=task, input_size=input_size)
    if meta.format == "aoti":
        from .aoti import package_runner

        return ExportedModel(path, meta, package_runner(path, meta, device))
    if path.suffix.lower() == ".pt2":
        return ExportedModel(path, meta, _pt2_runner(path))
    if meta.format == "tensorrt":
        return ExportedModel(path, meta, _engine_runner(path, meta, device))
    return ExportedModel(path, meta, _onnx_runner(path, meta, device, threads))


def _engine_runner(path: Path, meta: ExportMetadata, device):
    """A TensorRT engine on this GPU, after checking it was built for this GPU and TensorRT version."""
    from .tensorrt import check_engine_target, current_target, engine_runner, read_engine_header

    target = current_target(device if torch.device(device).type == "cuda" else "cuda")  # the extra, then CUDA
    if torch.device(device).type != "cuda":
        raise ExportedModelError(f"{path} is a TensorRT engine: it runs on a CUDA device (--device cuda), not "
                                 f"{device}")
    check_engine_target(meta, path, target)
    _, offset = read_engine_header(path)
    return engine_runner(path, meta, offset, device)


def _pt2_runner(path: Path):
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ExportedModelError(f"{path}: torch.export.load failed ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); {REEXPORT}") from None
    module = program.module()

    def run(x: torch.Tensor):
        with torch.no_grad():
            return list(module(x.float().cpu() if x.device.type != "cpu" else x.float()))

    return run


def _onnx_runner(path: Path, meta: ExportMetadata, device, threads):
    from .exporter import require_onnx

    _, ort = require_onnx()
    opset = int(_onnx_props(path)["__opset__"])
    if meta.opset is not None and opset != meta.opset:
        raise ExportedModelError(f"{path}: its metadata says ONNX opset {meta.opset} but the graph imports opset "
                                 f"{opset} (the file was changed after export); {REEXPORT}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=onnx_providers(device))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportedModelError(f"{path}: onnxruntime {ort.__version__} cannot load it (opset {opset}, dtype "
                                 f"{meta.dtype}): {first}. {REEXPORT} with this version (e.g. --opset "
                                 f"{min(opset, 18)}) or use another backend") from None
    names = [o.name for o in session.get_outputs()]
    if tuple(names) != meta.output_names:
        raise ExportedModelError(f"{path}: outputs {names} do not match its metadata {list(meta.output_names)}; "
                                 f"{REEXPORT}")
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor):
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return [torch.from_numpy(o) for o in session.run(None, {input_name: array})]

    return run
