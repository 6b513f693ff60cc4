"""The optional ``curate`` extra (ray[data], transformers, pyarrow), imported lazily, and connecting to Ray: the
shared :mod:`sapiens2.cluster.ray_runtime`, with curation's extra named in its errors."""
from __future__ import annotations

from sapiens2.cluster.ray_runtime import ExtraMissingError, connect_ray
from sapiens2.cluster.ray_runtime import require as _require

__all__ = ["CurateExtraMissingError", "require", "connect_ray"]

CurateExtraMissingError = ExtraMissingError  # the name curation's callers catch


def require(module: str):
    return _require(module, extra="curate", needed_by="curation")
