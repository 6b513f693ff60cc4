"""The inputs of a Ray Data run (curation, ``predict --engine ray``), listed as one row per image, and reading an
image's bytes back from its row.

Accepted inputs: image files, folders (walked recursively), ``.txt`` lists of paths (one per line, relative paths
are relative to the list), tar shards (``.tar``; every image member, WebDataset or not) and URIs that
``pyarrow.fs`` opens (``s3://``, ``gs://``, ``hdfs://``, ``file://`` -- files, folders or tar shards). A tar member
is addressed by its byte offset, so any worker reads it with one seek, locally or from a bucket.

``uid`` = first 16 hex digits of SHA-1 of the source string (``path`` or ``path#member``): stable across runs and
machines, it keys the manifest, the resume and the shard names.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

from sapiens2.errors import Sapiens2Error
from sapiens2.io.images import IMAGE_EXTENSIONS

__all__ = ["InputListError", "list_inputs", "read_item_bytes", "read_sidecar", "make_uid", "is_uri"]

log = logging.getLogger(__name__)


class InputListError(Sapiens2Error, ValueError):
    """An input that does not exist or is of a kind that cannot be listed."""


def make_uid(source: str) -> str:
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:16]


def is_uri(path: str) -> bool:
    return "://" in str(path)


def _filesystem(uri: str):
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(uri)
    return filesystem, inner


def _row(source: str, path: str, member: str = "", offset: int = -1, size: int = -1, sidecar: str = "") -> dict:
    return {"uid": make_uid(source), "source": source, "path": path, "member": member, "offset": int(offset),
            "size": int(size), "sidecar": sidecar}


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _sidecar_for(path: str, exists) -> str:
    candidate = str(Path(path).with_suffix(".json")) if not is_uri(path) else path.rsplit(".", 1)[0] + ".json"
    return candidate if exists(candidate) else ""


def _tar_rows(path: str, fileobj=None) -> list[dict]:
    rows = []
    with tarfile.open(path if fileobj is None else None, mode="r:", fileobj=fileobj) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    by_name = {m.name: m for m in members}
    for m in members:
        if not _is_image_name(m.name):
            continue
        side = by_name.get(m.name.rsplit(".", 1)[0] + ".json")
        sidecar = f"{m.name.rsplit('.', 1)[0]}.json@{side.offset_data}:{side.size}" if side is not None else ""
        rows.append(_row(f"{path}#{m.name}", path, m.name, m.offset_data, m.size, sidecar))
    return rows


def _local_rows(entry: Path) -> list[dict]:
    if entry.is_dir():
        files = sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith("."))
        rows = []
        for f in files:
            if f.suffix.lower() == ".tar":
                rows += _tar_rows(str(f))
            elif _is_image_name(f.name):
                rows.append(_row(str(f), str(f), sidecar=_sidecar_for(str(f), os.path.isfile)))
        return rows
    if entry.suffix.lower() == ".tar":
        return _tar_rows(str(entry))
    if entry.suffix.lower() == ".txt":
        rows = []
        for line in entry.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                target = line if is_uri(line) or os.path.isabs(line) else str(entry.parent / line)
                rows += _rows_for(target, from_list=True)
        return rows
    return [_row(str(entry), str(entry), sidecar=_sidecar_for(str(entry), os.path.isfile))]


def _uri_rows(uri: str) -> list[dict]:
    from pyarrow import fs

    filesystem, inner = _filesystem(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.NotFound:
        raise InputListError(f"input not found: {uri}")
    infos = ([i for i in filesystem.get_file_info(fs.FileSelector(inner, recursive=True)) if i.type == fs.FileType.File]
             if info.type == fs.FileType.Directory else [info])
    names = {i.path for i in infos}
    rows = []
    for i in sorted(infos, key=lambda i: i.path):
        full = f"{scheme}://{i.path}"
        if i.path.lower().endswith(".tar"):
            with filesystem.open_input_file(i.path) as handle:
                rows += _tar_rows(full, fileobj=handle)
        elif _is_image_name(i.path):
            side = i.path.rsplit(".", 1)[0] + ".json"
            rows.append(_row(full, full, sidecar=f"{scheme}://{side}" if side in names else ""))
    return rows


def _rows_for(entry: str, from_list: bool = False) -> list[dict]:
    if is_uri(entry):
        return _uri_rows(entry)
    path = Path(entry)
    if not path.exists():
        if from_list:  # a listed file that vanished is recorded (as unreadable) rather than stopping the run
            return [_row(str(path), str(path))]
        raise InputListError(f"input not found: {entry}")
    return _local_rows(path)


def list_inputs(inputs: list[str | os.PathLike] | str | os.PathLike) -> list[dict[str, Any]]:
    """One row per image (uid, source, path, member, offset, size, sidecar), unique by uid, in input order."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputListError("no inputs given")
    rows, seen = [], set()
    for entry in inputs:
        for row in _rows_for(os.fspath(entry)):
            if row["uid"] not in seen:
                seen.add(row["uid"])
                rows.append(row)
    log.info("listed %d images from %d input(s)", len(rows), len(inputs))
    return rows


def _read_range(path: str, offset: int, size: int) -> bytes:
    if is_uri(path):
        filesystem, inner = _filesystem(path)
        with filesystem.open_input_file(inner) as handle:
            if offset >= 0:
                handle.seek(offset)
                return handle.read(size)
            return handle.read()
    with open(path, "rb") as handle:
        if offset >= 0:
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise OSError(f"tar member truncated: wanted {size} bytes at {offset}, got {len(data)}")
            return data
        return handle.read()


def read_item_bytes(row: dict[str, Any]) -> bytes:
    """The encoded image of a listed row (whole file, or a tar member by offset)."""
    return _read_range(str(row["path"]), int(row["offset"]), int(row["size"]))


def read_sidecar(row: dict[str, Any]) -> dict[str, Any] | None:
    """The optional annotation next to an image: ``{"boxes": [[x1, y1, x2, y2], ...], "keypoints": [[[x, y, score]
    * K], ...]}`` (keypoints in the 308-point order). None when there is none."""
    sidecar = str(row.get("sidecar") or "")
    if not sidecar:
        return None
    if "@" in sidecar and row.get("member"):
        offset, size = sidecar.rsplit("@", 1)[1].split(":")
        data = _read_range(str(row["path"]), int(offset), int(size))
    else:
        data = _read_range(sidecar, -1, -1)
    return json.loads(data.decode("utf-8"))
