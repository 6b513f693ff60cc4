"""What an exported file says about itself: one :class:`ExportMetadata`, stored as JSON inside the file.

ONNX: ``metadata_props`` key ``sapiens2`` (the JSON) plus flat ``task`` / ``arch`` / ``input_size`` copies for
tools that show metadata (Netron). ``.pt2``: the archive's extra file ``sapiens2.json`` (``torch.export.load(path,
extra_files={"sapiens2.json": ""})``). AOTInductor packages (also ``.pt2``): AOTInductor's metadata map, key
``sapiens2`` (``export/aoti.py``). TensorRT engines: a header before the plan (``export/tensorrt.py``). A consumer
needs nothing else: the input is the normalised NCHW float32 RGB image ``(pixels_0_255 - mean) / std``, outputs as
listed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

FORMAT_VERSION = 1
METADATA_KEY = "sapiens2"
PT2_EXTRA_FILE = "sapiens2.json"
BACKBONE = "backbone"  # the task name of an exported backbone (features)
FORMATS = ("onnx", "torch-export", "aoti", "tensorrt")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2", "aoti": ".pt2", "tensorrt": ".engine"}


@dataclass(frozen=True)
class OutputSpec:
    name: str
    layout: str  # shape in terms of the input batch B and size H x W


# The outputs of each exported graph, in order (all float32).
OUTPUTS: dict[str, tuple[OutputSpec, ...]] = {
    BACKBONE: (OutputSpec("features", "(B, C, H/16, W/16) final-normed patch features (4K tokenizer: H/64, W/64)"),),
    "pose": (OutputSpec("heatmaps", "(B, 308, H/4, W/4) keypoint heatmaps (decode with UDP/DARK)"),),
    "seg": (OutputSpec("logits", "(B, 29, H, W) class logits"),),
    "normal": (OutputSpec("normal", "(B, 3, H, W) raw normals (normalise per pixel)"),),
    "pointmap": (OutputSpec("pointmap", "(B, 3, H, W) camera-frame points before scale"),
                 OutputSpec("scale", "(B, 1) metric scale")),
    "albedo": (OutputSpec("albedo", "(B, 3, H, W) raw albedo"),),
    "matting": (OutputSpec("matting", "(B, 4, H, W) premultiplied RGB + alpha in [0, 1]"),),
}


@dataclass(frozen=True)
class ExportMetadata:
    task: str  # "backbone" or a task name
    arch: str
    input_size: tuple[int, int]  # (H, W)
    batch: str | int  # "dynamic" or a fixed batch size
    format: str  # onnx | torch-export | aoti | tensorrt
    dtype: str  # float32 | float16 | bfloat16 | int8
    outputs: tuple[OutputSpec, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    use_tokenizer: bool = False
    rope_dtype: str = "bfloat16"
    quantization: str | None = None  # int8: "dynamic" or "static"
    opset: int | None = None  # ONNX only
    names: tuple[str, ...] = ()  # keypoint names (pose) or class names (seg)
    source: dict = field(default_factory=dict)  # what was exported (checkpoint identity)
    versions: dict = field(default_factory=dict)  # sapiens2 / torch / exporter versions
    engine: dict = field(default_factory=dict)  # TensorRT / aoti: the GPU or CPU (and versions) it is built for
    format_version: int = FORMAT_VERSION
    input_layout: str = "image: (B, 3, H, W) float32, RGB, (pixels_0_255 - mean) / std"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExportMetadata":
        data = json.loads(text)
        data["outputs"] = tuple(OutputSpec(**o) for o in data["outputs"])
        for key in ("input_size", "mean", "std", "names"):
            data[key] = tuple(data[key])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


def names_for(task: str) -> tuple[str, ...]:
    """Keypoint names for pose, class names for seg, nothing for the others."""
    from ..data.specs import keypoint_info, seg_classes

    if task == "pose":
        return keypoint_info().names
    if task == "seg":
        return seg_classes().names
    return ()
