"""WebDataset-style tar shards: members grouped into samples by key, read as a stream.

One reader for every producer and consumer of shards (``sapiens2 curate`` writes them, ``sapiens2 pretrain`` reads
them). A sample is the run of consecutive members sharing a key, the member path up to the first dot of its file
name: ``<key>.jpg`` + ``<key>.json``. Shards are read with ``tarfile``'s streaming mode, never indexed or
extracted, so pipes and object-store streams work and a collection larger than the disk cache streams through.
"""
from __future__ import annotations

import io
import tarfile
from typing import Iterator

from ..io.images import IMAGE_EXTENSIONS


def sample_key(member_name: str) -> tuple[str, str]:
    """WebDataset grouping: (key, extension) with the key up to the first dot of the file name."""
    directory, _, base = member_name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with reproducible metadata (mtime 0, mode 644): the same samples give the same bytes."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def iter_tar_samples(path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream (key, {extension: bytes}) groups from one tar shard in file order, one member at a time."""
    key, group = None, {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = sample_key(member.name)
            if k != key and group:
                yield key, group
                group = {}
            key = k
            handle = tar.extractfile(member)
            group[ext] = handle.read() if handle is not None else b""
    if group:
        yield key, group


def image_member(group: dict[str, bytes]) -> tuple[str, bytes] | None:
    """The image member of a sample group (``jpg`` first, then any image extension), or None."""
    for ext in ("jpg", "jpeg", "png", "webp"):
        if ext in group:
            return ext, group[ext]
    for ext, data in group.items():
        if "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
            return ext, data
    return None
