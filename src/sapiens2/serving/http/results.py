"""Where a request's output files live, and the JSON answer that describes them.

Each answered request gets a random id and a folder ``<results>/<id>/`` holding exactly the files
``sapiens2 predict`` writes for an image (same writers, so the same content), named ``image.<suffix>``. The
answer inlines the pose document and lists every file, either as a URL under ``/v1/results/<id>/<name>`` or as
base64 (then the folder is removed once encoded). Only the newest ``keep`` folders are kept.

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
from pathlib import Path
from typing import Any

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


class ResultStore:
    """The results folder: new per-request folders, safe look-ups, and pruning to the newest ``keep``."""

    def __init__(self, root: str | Path, keep: int = 200):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, int(keep))
        self._order: list[str] = []
        self._lock = threading.Lock()

    def new(self) -> tuple[str, Path]:
        rid = uuid.uuid4().hex
        folder = self.root / rid
        folder.mkdir()
        with self._lock:
            self._order.append(rid)
            old, self._order = self._order[:-self.keep], self._order[-self.keep:]
        for stale in old:
            shutil.rmtree(self.root / stale, ignore_errors=True)
        return rid, folder

    def discard(self, rid: str) -> None:
        with self._lock:
            if rid in self._order:
                self._order.remove(rid)
        shutil.rmtree(self.root / rid, ignore_errors=True)

    def path(self, rid: str, name: str) -> Path:
        """The file ``name`` of result ``rid``; :class:`ResultNotFound` for anything that is not exactly that."""
        if not _ID.fullmatch(rid or "") or not _NAME.fullmatch(name or "") or ".." in name:
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        path = (self.root / rid / name).resolve()
        if not path.is_relative_to(self.root / rid) or not path.is_file():  # also defeats symlinks out
            raise ResultNotFound(f"no result {rid!r}/{name!r}")
        return path

    def listing(self, rid: str) -> list[str]:
        if not _ID.fullmatch(rid or "") or not (self.root / rid).is_dir():
            raise ResultNotFound(f"no result {rid!r}")
        return sorted(p.name for p in (self.root / rid).iterdir() if p.is_file())


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
    try:
        written = write_prediction(prediction, rgb, folder / BASE_NAME, tasks, options)
        answer: dict[str, Any] = {
            "id": rid, "tasks": list(tasks),
            "image_size": {"height": int(prediction.image_size[0]), "width": int(prediction.image_size[1])},
            "timings_s": {k: round(float(v), 6) for k, v in (prediction.timings or {}).items()},
        }
        if "pose" in tasks:
            pose_file = next(p for p in written if p.name.endswith(".pose.json"))
            answer["pose"] = json.loads(pose_file.read_text(encoding="utf-8"))
        answer["files"] = file_entries(store, rid, written, encoding=encoding)
    except BaseException:
        store.discard(rid)
        raise
    if encoding == "base64":  # nothing refers to the folder any more (the id still names the request in logs)
        store.discard(rid)
    return answer


__all__ = ["BASE_NAME", "ResultNotFound", "ResultStore", "file_entries", "media_type", "prediction_answer"]
