"""Turning the paths a user gives into an ordered list of image and video inputs.

Files are classified by extension (case-insensitive). Folders are searched recursively; hidden files and
folders (names starting with ".") are skipped, which also skips our own temporary files; ``exclude`` skips more
(the caller's own outputs, e.g. an output folder inside an input folder). The order is
deterministic: the arguments' order, and inside a folder the sorted relative paths. A file reached twice
is listed once (first occurrence wins).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .images import IMAGE_EXTENSIONS
from .video import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

InputKind = Literal["image", "video"]


@dataclass(frozen=True)
class InputItem:
    """One input. ``relative`` is its path below the folder it was found in (just the file name for a
    file given directly); use it to mirror the input layout in an output folder."""

    path: Path
    kind: InputKind
    relative: Path

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


@dataclass
class DiscoveredInputs:
    """Result of :func:`discover_inputs`. ``missing``: given paths that do not exist. ``unsupported``:
    files given directly whose extension is neither an image nor a video one (files inside folders with
    other extensions are ignored silently). ``empty_folders``: given folders in which no image or video was found
    (after ``exclude``)."""

    items: list[InputItem] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    empty_folders: list[Path] = field(default_factory=list)

    @property
    def images(self) -> list[InputItem]:
        return [item for item in self.items if item.kind == "image"]

    @property
    def videos(self) -> list[InputItem]:
        return [item for item in self.items if item.kind == "video"]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)


def input_kind(path: str | os.PathLike[str]) -> InputKind | None:
    """'image' or 'video' from the file extension, None for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _walk_folder(folder: Path, exclude: Callable[[Path], bool] | None = None) -> list[Path]:
    found: list[Path] = []
    skip = exclude or (lambda path: False)
    for root, dirs, files in os.walk(folder, onerror=lambda exc: logger.warning("cannot list %s: %s",
                                                                                 exc.filename, exc.strerror)):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not skip(Path(root) / d)]
        found.extend(Path(root) / name for name in files if not name.startswith(".") and not skip(Path(root) / name))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def discover_inputs(paths: str | os.PathLike[str] | list[str | os.PathLike[str]], *,
                    exclude: Callable[[Path], bool] | None = None) -> DiscoveredInputs:
    """Classify files and search folders (recursively) for images and videos. Never raises for a bad
    path: missing ones are reported in ``missing`` for the caller to decide. ``exclude(path)``: folders and files
    met while searching a folder to leave out (paths given directly are always used)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    result = DiscoveredInputs()
    seen: set[Path] = set()

    def add(path: Path, kind: InputKind, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            result.items.append(InputItem(path=path, kind=kind, relative=relative))

    for given in map(Path, paths):
        if given.is_dir():
            media = [(path, kind) for path in _walk_folder(given, exclude)
                     if (kind := input_kind(path)) is not None]
            for path, kind in media:
                add(path, kind, path.relative_to(given))
            if not media:
                result.empty_folders.append(given)
        elif given.is_file():
            kind = input_kind(given)
            if kind is None:
                result.unsupported.append(given)
            else:
                add(given, kind, Path(given.name))
        else:
            result.missing.append(given)
    if result.missing:
        logger.warning("%d input path(s) do not exist: %s", len(result.missing),
                       ", ".join(map(str, result.missing[:5])))
    return result
