"""Video for people: frame sources (files, image folders, cameras, streams) read ahead on a thread, multi-person
tracking, and temporal smoothing of keypoints, pointmap scale and per-person depth.

Modules: ``sources`` (frame sources), ``prefetch`` (decoding thread), ``assignment`` (Hungarian), ``motion``
(box Kalman filter), ``similarity`` (IoU, OKS), ``tracking`` (the tracker), ``smoothing`` (One-Euro, exponential),
``temporal`` (tracking + smoothing per video), ``synthetic`` (a test clip of two people crossing), ``live``
(a latest-frame-wins grabber, pose boxes from the previous keypoints, live FPS and latency).
"""
from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: no work (and no torch) at import time.
_EXPORTS = {
    "Frame": "sources", "FrameSource": "sources", "SourceSpec": "sources", "open_source": "sources",
    "parse_source": "sources", "parse_position": "sources", "Prefetcher": "prefetch",
    "PoseTracker": "tracking", "TrackerOptions": "tracking", "OneEuroFilter": "smoothing",
    "OneEuroParams": "smoothing", "ExponentialSmoother": "smoothing", "SmoothingPreset": "smoothing",
    "PRESETS": "smoothing", "smoothing_preset": "smoothing", "TemporalProcessor": "temporal",
    "FrameTracks": "temporal", "min_cost_assignment": "assignment", "crossing_clip": "synthetic",
    "LatestFrameGrabber": "live", "KeypointBoxes": "live", "BoxReuseOptions": "live", "LiveStats": "live",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
