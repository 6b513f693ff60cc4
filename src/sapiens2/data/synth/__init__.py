"""Synthetic humans: a procedural generator of rendered people with exact ground truth for pose (308 keypoints),
29-class body-part segmentation, normals, pointmap/depth, albedo and foreground masks.

Modules: ``pose`` (joint angles), ``body`` (skeleton + primitives), ``face`` (face layout and landmarks),
``appearance`` (skin, hair, clothes), ``raster`` (ray casting), ``parts`` (class/albedo per pixel),
``keypoints`` (308 keypoints + visibility), ``scene`` (camera, placement, light, background), ``render`` (one
sample), ``mirror``, ``writer`` (to disk), ``dataset`` (torch Dataset), ``preview`` (contact sheet).
"""
from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: importing the package must not pull in torch (only the Dataset needs it).
_EXPORTS = {"SynthHumans": "dataset", "collate": "dataset", "mirror_sample": "mirror",
            "generate_sample": "render", "write_dataset": "writer", "contact_sheet": "preview"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
