"""Humans-1B-style data curation: turn an image collection into curated, de-duplicated, balanced human-centric
shards for ``sapiens2 pretrain``, on Ray Data (a local instance or a cluster). Needs the ``curate`` extra
(``pip install sapiens2[curate]``: ray[data], transformers, pyarrow), imported only when a run starts.

Entry points: :func:`curate` (the whole run), :func:`iter_shards` (read the output), :func:`load_config`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["curate", "CurationResult", "CurationInterrupted", "CurateConfig", "load_config", "iter_shards",
           "list_shards", "read_manifest"]

_LAZY = {
    "curate": "pipeline", "CurationResult": "pipeline", "CurationInterrupted": "pipeline",
    "CurateConfig": "config", "load_config": "config", "iter_shards": "shards", "list_shards": "shards",
    "read_manifest": "manifest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
