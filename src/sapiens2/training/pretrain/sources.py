"""Where pretraining images come from: a folder of image files, or WebDataset-style tar shards read as a stream.

``--data`` accepts, comma-separated: a folder (its ``*.tar`` files, recursively, make it a shard source;
otherwise its image files do), a ``.tar`` file, a glob (``shards/shard-*.tar``) or a brace range
(``shard-{000000..000127}.tar``). Shards are streamed by :mod:`sapiens2.data.shards`, the reader the curation
pipeline's shards are read with too: ``<key>.jpg`` + optional ``<key>.json``.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import Sapiens2Error
from ...io.images import IMAGE_EXTENSIONS


class PretrainDataError(Sapiens2Error, ValueError):
    """The ``--data`` argument names nothing readable."""


@dataclass(frozen=True)
class DataSource:
    kind: str  # "folder" or "shards"
    paths: tuple[str, ...]  # image files or shard files, sorted

    def __len__(self) -> int:
        return len(self.paths)


_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> [a-000.tar, a-001.tar, a-002.tar] (zero padding kept; several ranges nest)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out += expand_braces(pattern[:m.start()] + str(i).zfill(width) + pattern[m.end():])
    return out


def _is_image(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def resolve_data(spec: str | os.PathLike | list[str]) -> DataSource:
    """Turn the ``--data`` argument into a sorted list of image files or of tar shards (not both)."""
    entries = [s for s in (spec.split(",") if isinstance(spec, str) else [os.fspath(x) for x in
               ([spec] if isinstance(spec, os.PathLike) else spec)]) if s.strip()]
    if not entries:
        raise PretrainDataError("no data given: pass a folder of images or tar shards")
    images: set[str] = set()
    shards: set[str] = set()
    for entry in entries:
        entry = entry.strip()
        for item in expand_braces(entry):
            matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
            if not matches:
                raise PretrainDataError(f"{item!r} matches no files")
            for path in matches:
                p = Path(path)
                if p.is_dir():
                    files = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
                    tars = [f for f in files if f.lower().endswith(".tar")]
                    (shards.update(tars) if tars else images.update(f for f in files if _is_image(f)))
                elif p.is_file() and path.lower().endswith(".tar"):
                    shards.add(str(p))
                elif p.is_file() and _is_image(path):
                    images.add(str(p))
                elif not p.exists():
                    raise PretrainDataError(f"{path!r} does not exist")
                else:
                    raise PretrainDataError(f"{path!r} is neither an image, a .tar shard nor a folder")
    if images and shards:
        raise PretrainDataError("--data mixes image files and tar shards; pass one kind")
    if not images and not shards:
        raise PretrainDataError(f"no images or .tar shards found in {', '.join(entries)}")
    return DataSource("shards", tuple(sorted(shards))) if shards else DataSource("folder", tuple(sorted(images)))
