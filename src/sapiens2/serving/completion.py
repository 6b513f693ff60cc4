"""Completion records: what says an input's outputs are whole and current, and what tells our files from inputs.

After every output of an input is written, ``B.done.json`` is written (atomically, last)::

    {"format": "sapiens2.done", "format_version": 1, "input": "in/a.png",
     "input_file": {"bytes": 1234, "modified_ns": ...},          # null for cameras, streams, frame folders
     "settings": {"tasks": [...], "models": {...}, "input_size": ..., "flip_test": ..., ...},
     "outputs": ["a.pose.json", "a.pose.png", ...]}              # names beside the record

An input is skipped on a re-run only when its record exists, was made with the same settings from the same input
file, and every listed output is still there. So an interrupted video (no record), outputs of other options (other
settings) and outputs of older versions (no record) are redone. The old record is removed before an input is
redone, so outputs half-replaced by a crashed run are never mistaken for complete ones.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sapiens2.io import input_kind, write_json
from sapiens2.io.identity import file_identity  # shared with the Ray engine's decode tasks

from .outputs import SEG_PROBS_SUFFIX, TASK_ORDER, TASK_OUTPUTS, with_suffix

logger = logging.getLogger(__name__)

DONE_SUFFIX = ".done.json"
RECORD_FORMAT = "sapiens2.done"
RECORD_VERSION = 1

# Every name ending we give an output (the longest first, so ".seg_vis.png" wins over ".png"-like overlaps).
OUTPUT_SUFFIXES = tuple(sorted({s for entry in TASK_OUTPUTS.values() for s, _ in entry.files}
                               | {f".{t}.mp4" for t in TASK_ORDER} | {SEG_PROBS_SUFFIX, DONE_SUFFIX},
                               key=len, reverse=True))


def record_path(base: Path) -> Path:
    return with_suffix(base, DONE_SUFFIX)


def _jsonable(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists, paths strings), so records compare equal."""
    return json.loads(json.dumps(value, default=os.fspath))


def make_record(input_path: Path, outputs: Iterable[Path], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "input": str(input_path),
            "input_file": file_identity(input_path), "settings": _jsonable(dict(settings)),
            "outputs": sorted(dict.fromkeys(Path(p).name for p in outputs))}


def write_record(base: Path, input_path: Path, outputs: Iterable[Path], settings: Mapping[str, Any]) -> Path:
    """Mark an input done: call only after every one of ``outputs`` is written."""
    return write_json(record_path(base), make_record(input_path, outputs, settings))


def clear_record(base: Path) -> None:
    """Forget that an input was done (before redoing it)."""
    try:
        record_path(base).unlink(missing_ok=True)
    except OSError as exc:  # the write of the new record will report a real problem
        logger.debug("cannot remove %s: %s", record_path(base), exc)


def is_complete(base: Path, input_path: Path, expected: Iterable[Path], settings: Mapping[str, Any]) -> bool:
    """Whether ``base``'s record says its outputs are whole and were made from this input with ``settings``."""
    try:
        record = json.loads(record_path(base).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
            or record.get("format_version") != RECORD_VERSION:
        return False
    if record.get("settings") != _jsonable(dict(settings)) or record.get("input_file") != file_identity(input_path):
        return False
    names = record.get("outputs")
    if not isinstance(names, list) or not set(Path(p).name for p in expected) <= set(names):
        return False
    folder = base.parent
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in names)


def own_output_filter(output_dir: str | os.PathLike, suffixes: Iterable[str] = OUTPUT_SUFFIXES
                      ) -> Callable[[Path], bool]:
    """For :func:`sapiens2.io.discover_inputs` ``exclude``: whether a path met while walking an input folder is
    something we wrote into ``output_dir``, so an output folder inside (or equal to) an input folder is not read
    back as input.

    The output folder itself is excluded (with its subtree). Inside it, a file is ours when its name is an output
    base plus one of our suffixes and the base has a completion record or its input beside it (``x.pose.png``
    next to ``x.done.json`` or ``x.jpg``); a video's frame files ``B/000123.seg.png`` likewise by ``B``.
    ``suffixes``: the endings of the command's outputs (default: predict's).
    """
    out = Path(output_dir).resolve()
    suffixes = tuple(sorted(set(suffixes) | {DONE_SUFFIX}, key=len, reverse=True))

    def produced(folder: Path, base: str, exclude: Path) -> bool:
        if with_suffix(folder / base, DONE_SUFFIX).is_file():
            return True
        try:
            siblings = [p for p in folder.iterdir() if p.name.startswith(base + ".")]
        except OSError:
            return False
        return any(p != exclude and p.stem == base and input_kind(p) is not None for p in siblings)

    def exclude(path: Path) -> bool:
        resolved = path.resolve()
        if resolved == out:
            return True
        if out not in resolved.parents:
            return False
        name = path.name
        suffix = next((s for s in suffixes if name.endswith(s) and len(name) > len(s)), None)
        if suffix is None or path.is_dir():
            return False
        base = name[: -len(suffix)]
        if produced(path.parent, base, path):
            return True
        frame = len(base) == 6 and base.isdigit()
        return frame and produced(path.parent.parent, path.parent.name, path.parent)

    return exclude


__all__ = ["DONE_SUFFIX", "OUTPUT_SUFFIXES", "clear_record", "file_identity", "is_complete", "make_record",
           "own_output_filter", "record_path", "write_record"]
