"""Person-detector weights by hub name, through the same download/cache rule as the Sapiens2 checkpoints
(:func:`sapiens2.checkpoints.hub.fetch_file`: the local Hugging Face cache first, then offline mode, then one short
reachability check, then the download).

The default pose detector is RT-DETR (ResNet-50-vd, COCO; ``PekingU/rtdetr_r50vd``: its ``config.json``,
``preprocessor_config.json`` and ``model.safetensors``, 172 MB), in the transformers layout. A local
``save_pretrained`` folder holding those files is used as it is. Building the network is the inference layer's job
(``sapiens2.inference.detectors``); this module only finds the files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotAvailableError
from .hub import fetch_file

__all__ = ["DEFAULT_DETECTOR_REPO", "DETECTOR_FILES", "DetectorFolder", "OFFLINE_DETECTORS", "detector_folder",
           "is_repo_id"]

DEFAULT_DETECTOR_REPO = "PekingU/rtdetr_r50vd"
DETECTOR_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
#: What to choose instead when the detector cannot be had: the detectors that need no download.
OFFLINE_DETECTORS = ("--detector hog (OpenCV, shipped; finds upright, full-body people only), --detector seg (boxes "
                     "around the seg model's foreground) or --detector none (the whole image as one person)")


@dataclass(frozen=True)
class DetectorFolder:
    """Where a detector's files are: ``folder`` holds :data:`DETECTOR_FILES`; ``name`` is how outputs name it
    (the hub repo id, or the local folder as given)."""

    name: str
    folder: Path


def _how_to_get(repo_id: str, what: str) -> str:
    files = " ".join(DETECTOR_FILES)
    return (f"cannot load the person detector rtdetr:{repo_id}: {what}. Fetch it once on a machine with network "
            f"access, `hf download {repo_id} {files}` (or run once online; it is cached), or pass a local copy "
            f"(a folder with {', '.join(DETECTOR_FILES)}) as --detector rtdetr:PATH; or choose a detector that needs "
            f"no download: {OFFLINE_DETECTORS}.")


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a hub repo id ``ORG/NAME`` rather than a path."""
    return text.count("/") == 1 and not text.startswith(("/", ".", "~")) and all(text.split("/"))


def detector_folder(ref: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
                    endpoint: str | None = None, timeout: float | None = None) -> DetectorFolder:
    """The folder of a detector given as a local folder or a hub repo id (default :data:`DEFAULT_DETECTOR_REPO`);
    hub files come from the Hugging Face cache, downloaded once. Raises :class:`ModelNotAvailableError` saying how
    to fetch it or which detector to choose instead."""
    text = str(ref).strip() if ref is not None and str(ref).strip() else DEFAULT_DETECTOR_REPO
    local = Path(text).expanduser()
    if local.is_dir():
        missing = [f for f in DETECTOR_FILES if not (local / f).is_file()]
        if missing:
            raise ModelNotAvailableError(f"the detector folder {text} lacks {', '.join(missing)}: give a transformers "
                                         "save_pretrained folder of an RT-DETR model (with "
                                         f"{', '.join(DETECTOR_FILES)})")
        return DetectorFolder(text, local)
    if local.exists() or not is_repo_id(text):
        raise ModelNotAvailableError(f"--detector rtdetr:{text}: neither a folder nor a hub repo id like "
                                     f"{DEFAULT_DETECTOR_REPO}")
    folder = None
    for filename in DETECTOR_FILES:
        path = fetch_file(text, filename, lambda why, f=filename: _how_to_get(text, f"{f}: {why}"),
                          cache_dir=cache_dir, endpoint=endpoint, timeout=timeout)
        if folder is not None and path.parent != folder:  # two snapshots: a partial update of the cache
            raise ModelNotAvailableError(_how_to_get(text, f"its cached files are from different revisions "
                                                           f"({folder} and {path.parent})"))
        folder = path.parent
    return DetectorFolder(text, folder)
