"""The curated output format, read by ``sapiens2 pretrain``: WebDataset-style tar shards plus an index.

Layout of ``OUT/shards/``::

    shard-000000.tar   <key>.jpg (the image, JPEG; JPEG inputs are copied byte for byte) and
                       <key>.json (metadata: key, source, width, height, persons [{box x1 y1 x2 y2 in pixels of the
                       .jpg, score, yaw, pitch}], scores {every stage score}, cluster)
    shard-000001.tar   ...
    index.json         {"format": "sapiens2-curated-shards/1", "total": N,
                        "shards": [{"name": "shard-000000.tar", "count": n, "fingerprint": "..."}, ...]}

Members of one sample are adjacent (.jpg then .json), so a streaming tar reader pairs them. ``key`` is the input's
uid (16 hex digits, no dots). Each shard is written under a temporary name and renamed, and is skipped on a resumed
run when its fingerprint (the hash of its members' keys and metadata) is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.data.shards import add_member, iter_tar_samples
from sapiens2.io.images import decode_image
from sapiens2.io.writers import atomic_path, encode_image, write_json

from .sources import read_item_bytes

__all__ = ["SHARD_FORMAT", "shard_name", "shard_fingerprint", "write_shard", "write_index", "iter_shards",
           "list_shards"]

log = logging.getLogger(__name__)
SHARD_FORMAT = "sapiens2-curated-shards/1"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def shard_fingerprint(samples: list[dict[str, Any]]) -> str:
    text = json.dumps([[s["meta"]["key"], s["meta"]] for s in samples], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _jpeg_bytes(row: dict[str, Any], quality: int) -> bytes:
    data = read_item_bytes(row)
    loaded = decode_image(data, name=str(row["source"]))
    if data[:3] == b"\xff\xd8\xff" and loaded.orientation == 1:
        return data  # already a JPEG in display orientation: copy untouched
    return encode_image(loaded.rgb, ".jpg", jpeg_quality=quality)


def write_shard(path: str | Path, samples: list[dict[str, Any]], jpeg_quality: int = 95) -> int:
    """Write one shard atomically. ``samples``: dicts with ``row`` (listing columns, to read the image) and
    ``meta`` (the JSON). Returns the number of samples written (a source that vanished is skipped, logged)."""
    path = Path(path)
    written = 0
    with atomic_path(path) as temp:
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                key = sample["meta"]["key"]
                try:
                    image = _jpeg_bytes(sample["row"], jpeg_quality)
                except (OSError, ValueError) as exc:
                    log.warning("skipping %s in %s: its source cannot be read any more (%s)", key, path.name, exc)
                    continue
                add_member(tar, f"{key}.jpg", image)
                add_member(tar, f"{key}.json", json.dumps(sample["meta"], sort_keys=True).encode())
                written += 1
    return written


def write_index(shard_dir: str | Path, entries: list[dict[str, Any]]) -> Path:
    entries = sorted(entries, key=lambda e: e["name"])
    return write_json(Path(shard_dir) / "index.json", {"format": SHARD_FORMAT,
                                                       "total": int(sum(e["count"] for e in entries)),
                                                       "shards": entries})


def list_shards(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Shard files from a shard folder (its index.json, else every shard-*.tar), tar files, or a mix."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            index = p / "index.json"
            if index.is_file():
                data = json.loads(index.read_text(encoding="utf-8"))
                if data.get("format") != SHARD_FORMAT:
                    raise ValueError(f"{index}: unknown shard format {data.get('format')!r}")
                found += [p / e["name"] for e in data["shards"]]
            else:
                found += sorted(p.glob("shard-*.tar"))
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no shard or shard folder at {p}")
    return found


def iter_shards(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[tuple[str, np.ndarray, dict]]:
    """Stream ``(key, rgb uint8 (H, W, 3), meta dict)`` from curated shards, in shard then member order."""
    for shard in list_shards(paths):
        pending = 0
        for key, parts in iter_tar_samples(shard):
            if "jpg" not in parts or "json" not in parts:
                pending += 1
                continue
            rgb = decode_image(parts["jpg"], name=f"{shard}:{key}.jpg").rgb
            yield key, rgb, json.loads(parts["json"].decode("utf-8"))
        if pending:
            log.warning("%s: %d sample(s) without both .jpg and .json were skipped", shard, pending)
