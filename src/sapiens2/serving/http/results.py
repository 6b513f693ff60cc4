"""Where a request's output files live, and the JSON answer that describes them.

Each answered request gets a random id and a folder ``<results>/<id>/`` holding exactly the files
``sapiens2 predict`` writes for an image (same writers, so the same content), named ``image.<suffix>``. The
answer inlines the pose document and lists every file, either as a URL under ``/v1/results/<id>/<name>`` or as
base64 (then the folder is removed once encoded). Only the newest ``keep`` folders are kept.

With URLs, the pictures made for a person (``image.pose.png``, ``image.seg_vis.png``, ``image.normal.png``,
``image.depth_vis.png``: :func:`~sapiens2.serving.outputs.visualisation_suffixes`) are drawn only when their URL
is first fetched, then kept in the folder like the other files: drawing and PNG-encoding ``pose.png`` was most of
the service's own time per request (35 of ~43 ms CPU for a 512x512 photo), and most clients (the page included)
never fetch it. Until then the store holds the prediction and the decoded image in memory, the newest first,
within ``lazy_bytes`` (default 512 MB); beyond that the oldest pending pictures are dropped and their URLs answer
404 like those of pruned results. Their entries in the answer have no ``bytes`` (the size is not known yet).

A result id is 32 hex digits and a file name is one plain path component; anything else is "not found", and
the resolved path must still lie inside the results folder, so no id or name can read another path.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.errors import Sapiens2Error

_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BASE_NAME = "image"  # the files of one request: image.pose.json, image.seg.png, ...
MEDIA_TYPES = {".json": "application/json", ".jsonl": "application/x-ndjson", ".png": "image/png",
               ".npy": "application/octet-stream", ".ply": "application/octet-stream", ".mp4": "video/mp4"}


class ResultNotFound(Sapiens2Error, LookupError):
    """No such result id or file (also what any path trick gets)."""


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


DEFAULT_LAZY_BYTES = 512 * 2**20


@dataclass
class _Pending:
    """What is needed to draw a result's pictures later: file name -> (task, suffix) of each not drawn yet."""

    prediction: Any
    rgb: np.ndarray
    options: Any
    names: dict[str, tuple[str, str]]
    nbytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)


def _array_bytes(value: Any, depth: int = 0) -> int:
    """Bytes of the NumPy arrays held by ``value`` (a Prediction and its results: dataclasses, dicts)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if depth > 3:
        return 0
    if is_dataclass(value) and not isinstance(value, type):
        return sum(_array_bytes(getattr(value, f.name), depth + 1) for f in fields(value))
    if isinstance(value, dict):
        return sum(_array_bytes(v, depth + 1) for v in value.values())
    return 0


class ResultStore:
    """The results folder: new per-request folders, safe look-ups, pruning to the newest ``keep``, and the pictures
    drawn on first request (see the module doc)."""

    def __init__(self, root: str | Path, keep: int = 200, lazy_bytes: int = DEFAULT_LAZY_BYTES):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, int(keep))
        self.lazy_bytes = int(lazy_bytes)
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._pending_bytes = 0

    def new(self) -> tuple[str, Path]:
        rid = uuid.uuid4().hex
        folder = self.root / rid
        folder.mkdir()
        with self._lock:
            self._order.append(rid)
            old, self._order = self._order[:-self.keep], self._order[-self.keep:]
            for stale in old:
                self._forget(stale)
        for stale in old:
            shutil.rmtree(self.root / stale, ignore_errors=True)
        return rid, folder

    def discard(self, rid: str) -> None:
        with self._lock:
            if rid in self._order:
                self._order.remove(rid)
            self._forget(rid)
        shutil.rmtree(self.root / rid, ignore_errors=True)

    def _forget(self, rid: str) -> None:
        """Drop ``rid``'s pending pictures (the caller holds the lock)."""
        entry = self._pending.pop(rid, None)
        if entry is not None:
            self._pending_bytes -= entry.nbytes

    def defer(self, rid: str, prediction, rgb: np.ndarray, tasks: list[str], options) -> list[str]:
        """Remember what draws ``rid``'s pictures when first fetched; returns their file names. The oldest
        pending results are dropped beyond ``lazy_bytes`` (the newest is always kept)."""
        from sapiens2.serving.outputs import visualisation_suffixes

        names = {f"{BASE_NAME}{suffix}": (task, suffix) for task in tasks for suffix in visualisation_suffixes(task)}
        if not names:
            return []
        entry = _Pending(prediction, rgb, options, names, int(rgb.nbytes) + _array_bytes(prediction))
        with self._lock:
            if rid not in self._order:
                return []
            self._pending[rid] = entry
            self._pending_bytes += entry.nbytes
            while self._pending_bytes > self.lazy_bytes and len(self._pending) > 1:
                self._forget(next(iter(self._pending)))
        return list(names)

    def render(self, rid: str, name: str) -> Path:
        """Draw the pending picture ``name`` of ``rid`` into its folder (once; concurrent requests wait for it) and
        return its path; :class:`ResultNotFound` when no such picture is pending."""
        if not _ID.fullmatch(rid or "") or not _NAME.fullmatch(name or ""):
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        with self._lock:
            entry = self._pending.get(rid)
        if entry is None or name not in entry.names:
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        from sapiens2.serving.outputs import write_task_files

        with entry.lock:
            if not (self.root / rid / name).is_file():
                task, suffix = entry.names[name]
                write_task_files(entry.prediction, entry.rgb, self.root / rid / BASE_NAME, task, entry.options,
                                 only=[suffix])
            drawn = all((self.root / rid / n).is_file() for n in entry.names)
        if drawn:  # every picture is on disk: the prediction and image are no longer needed
            with self._lock:
                if self._pending.get(rid) is entry:
                    self._forget(rid)
        return self.path(rid, name)

    def pending(self, rid: str) -> list[str]:
        """The names of ``rid``'s pictures not drawn yet."""
        with self._lock:
            entry = self._pending.get(rid)
        return [] if entry is None else [n for n in entry.names if not (self.root / rid / n).is_file()]

    def path(self, rid: str, name: str) -> Path:
        """The file ``name`` of result ``rid``; :class:`ResultNotFound` for anything that is not exactly that."""
        if not _ID.fullmatch(rid or "") or not _NAME.fullmatch(name or "") or ".." in name:
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        path = (self.root / rid / name).resolve()
        if not path.is_relative_to(self.root / rid) or not path.is_file():  # also defeats symlinks out
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        return path

    def listing(self, rid: str) -> list[str]:
        """The files of ``rid``: those on disk and the pictures drawn when fetched."""
        if not _ID.fullmatch(rid or "") or not (self.root / rid).is_dir():
            raise ResultNotFound(f"no result {rid!r}")
        on_disk = {p.name for p in (self.root / rid).iterdir() if p.is_file()}
        return sorted(on_disk | set(self.pending(rid)))


def file_entries(store: ResultStore, rid: str, paths: list[Path], *, encoding: str,
                 url_prefix: str = "/v1/results") -> dict[str, dict[str, Any]]:
    """``{suffix: {name, media_type, bytes, url | base64}}`` for the files of one result."""
    entries = {}
    for path in paths:
        suffix = path.name[len(BASE_NAME):] if path.name.startswith(BASE_NAME) else path.name
        entry: dict[str, Any] = {"name": path.name, "media_type": media_type(path.name), "bytes": path.stat().st_size}
        if encoding == "base64":
            entry["base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
        else:
            entry["url"] = f"{url_prefix}/{rid}/{path.name}"
        entries[suffix.lstrip(".")] = entry
    return entries


def prediction_answer(prediction, rgb, tasks: list[str], options, store: ResultStore, *,
                      encoding: str = "url") -> dict[str, Any]:
    """The JSON answer for one image: the same files ``sapiens2 predict`` writes (written by its writers into a
    new result folder), the pose document inline, and the files as URLs or base64 (``encoding``)."""
    from sapiens2.serving.outputs import write_prediction

    rid, folder = store.new()
    lazy = encoding != "base64"  # pictures are drawn when their URL is fetched (module doc)
    try:
        written = write_prediction(prediction, rgb, folder / BASE_NAME, tasks, options, visualisations=not lazy)
        answer: dict[str, Any] = {
            "id": rid, "tasks": list(tasks),
            "image_size": {"height": int(prediction.image_size[0]), "width": int(prediction.image_size[1])},
            "timings_s": {k: round(float(v), 6) for k, v in (prediction.timings or {}).items()},
        }
        if "pose" in tasks:
            pose_file = next(p for p in written if p.name.endswith(".pose.json"))
            answer["pose"] = json.loads(pose_file.read_text(encoding="utf-8"))
        answer["files"] = file_entries(store, rid, written, encoding=encoding)
        if lazy:
            for name in store.defer(rid, prediction, rgb, list(tasks), options):
                answer["files"][name[len(BASE_NAME):].lstrip(".")] = {
                    "name": name, "media_type": media_type(name), "url": f"/v1/results/{rid}/{name}"}
    except BaseException:
        store.discard(rid)
        raise
    if encoding == "base64":  # nothing refers to the folder any more (the id still names the request in logs)
        store.discard(rid)
    return answer


__all__ = ["BASE_NAME", "ResultNotFound", "ResultStore", "file_entries", "media_type", "prediction_answer"]
