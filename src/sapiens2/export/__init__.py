"""Export Sapiens2 models for other runtimes: ONNX (ONNX Runtime, int8 quantisation), ``torch.export`` (.pt2),
AOTInductor packages (.pt2, compiled ahead of time) and TensorRT engines, each file carrying its own metadata
(:class:`ExportMetadata`); and loading them back as callables that take the same normalised NCHW float tensor as the
torch model and return the same output structure.

``exporter``: :func:`export_model` (a model object) and :func:`export_checkpoint` (a checkpoint path or published
name); ``loaded``: :func:`load_exported`, :func:`read_export_metadata`; ``onnx_graph``: graph passes; ``aoti``:
AOTInductor packages; ``tensorrt``: engines.
"""
from .exporter import DEFAULT_OPSET, ExportResult, export_checkpoint, export_model
from .loaded import ExportedModel, load_exported, read_export_metadata
from .metadata import BACKBONE, FORMATS, OUTPUTS, ExportMetadata, OutputSpec

__all__ = ["BACKBONE", "DEFAULT_OPSET", "ExportMetadata", "ExportResult", "ExportedModel", "FORMATS", "OUTPUTS",
           "OutputSpec", "export_checkpoint", "export_model", "load_exported", "read_export_metadata"]
