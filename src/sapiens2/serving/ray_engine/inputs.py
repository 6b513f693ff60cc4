"""The inputs of ``predict --engine ray`` as rows any Ray worker can read back, each with its output base.

Files and folders are discovered exactly as the local job does (:func:`sapiens2.io.discover_inputs`, same order,
same output bases), so both engines write the same files for them. Besides: WebDataset / tar shards (every image
member; what ``sapiens2 curate`` writes), ``.txt`` lists (one path or URI a line, ``#`` comments, relative to the
list) and ``.parquet`` lists (a ``path`` column), and URIs that ``pyarrow.fs`` opens (``s3://``, ``gs://``,
``file://``: files, prefixes, shards) and shard folders (with an ``index.json``), listed by
:mod:`sapiens2.cluster.listing`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sapiens2.cluster.listing import is_uri, list_inputs
from sapiens2.io import discover_inputs, input_kind
from sapiens2.io.images import IMAGE_EXTENSIONS

from ..bookkeeping import InputFailure
from ..naming import output_bases

__all__ = ["RayInput", "list_predict_inputs"]

LIST_SUFFIXES = (".txt", ".parquet")


@dataclass(frozen=True)
class RayInput:
    """One image or video input. ``source``: what the manifest calls it (a path, ``shard.tar#member``, a URI); ``path``,
    ``offset``, ``size``: where its bytes are (a tar member by offset, ``-1`` for a whole file); ``base``: its
    output base relative to the output folder; ``is_video``: a video file (done whole by one worker, with the
    local job's video pipeline). Quacks like :class:`~sapiens2.io.InputItem` for the job's plan."""

    source: str
    path: str
    offset: int = -1
    size: int = -1
    relative_name: str = ""
    base: str = ""
    is_video: bool = False

    @property
    def kind(self) -> str:
        return "video" if self.is_video else "image"

    @property
    def relative(self) -> Path:
        return Path(self.relative_name)

    @property
    def in_file(self) -> bool:
        """A whole local file, read like the local job reads it (not a tar member, not a URI)."""
        return self.offset < 0 and not is_uri(self.path)

    def to_dict(self) -> dict:
        return asdict(self)


def _listed_paths(path: Path) -> list[str]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise ValueError(f"{path}: a Parquet list of inputs needs a 'path' column (has "
                             f"{', '.join(table.column_names) or 'none'})")
        lines = [str(v) for v in table.column("path").to_pylist() if v]
    else:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
    return [line if is_uri(line) or os.path.isabs(line) else str(path.parent / line) for line in lines]


def _is_local(entry: str) -> bool:
    """A file or folder discovered like the local job does (not a shard, a list or a URI)."""
    path = Path(entry)
    return not (is_uri(entry) or entry.lower().endswith(".tar")
                or (path.is_file() and path.suffix.lower() in LIST_SUFFIXES))


def _discover(paths: list[str], *, exclude, items: list, failures: list) -> None:
    """Files and folders, in one :func:`~sapiens2.io.discover_inputs` call as the local job makes it."""
    found = discover_inputs(paths, exclude=exclude)
    for item in found.items:
        items.append(RayInput(str(item.path), str(Path(item.path).absolute()), relative_name=str(item.relative),
                              is_video=item.is_video))
    failures.extend(InputFailure(p, "does not exist") for p in found.missing)
    failures.extend(InputFailure(p, "not an image or video file extension") for p in found.unsupported)
    for folder in map(Path, paths):
        if folder.is_dir():
            failures.extend(_image_named_folders(folder, found.items, exclude))


def _other(entry: str, *, items: list, failures: list, listed: bool) -> None:
    """The inputs of a shard, a list or a URI (or, inside a list, a listed file)."""
    if is_uri(entry) or entry.lower().endswith(".tar"):
        prefix = entry.rstrip("/")
        try:
            rows = list_inputs([entry])
        except Exception as exc:  # a missing shard or prefix: recorded, the run goes on
            failures.append(InputFailure(Path(entry), f"cannot be listed: {exc}"))
            return
        for row in rows:
            if row["member"]:  # shard member: <shard stem>/<member>
                relative = Path(Path(row["path"]).stem) / row["member"]
            else:
                relative = Path(row["path"][len(prefix):].lstrip("/") or Path(row["path"]).name)
            items.append(RayInput(row["source"], row["path"], int(row["offset"]), int(row["size"]), str(relative)))
        return
    path = Path(entry)
    if not listed:  # a .txt / .parquet list
        for listed_entry in _listed_paths(path):
            _other(listed_entry, items=items, failures=failures, listed=True)
        return
    # a listed file is an image or a video: a missing or bad one fails when read, with the reader's reason
    items.append(RayInput(str(path), str(path.absolute()), relative_name=path.name,
                          is_video=input_kind(path) == "video"))


def _image_named_folders(root: Path, items, exclude) -> list[InputFailure]:
    """Folders named like images (``x.jpg/``) that hold no input: someone meant a file there."""
    holders = {parent for item in items for parent in Path(item.path).parents}
    bad = []
    for folder, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (exclude and exclude(Path(folder) / d)))
        for name in dirs:
            candidate = Path(folder) / name
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and candidate not in holders:
                bad.append(InputFailure(candidate, "is a directory, not an image file"))
    return bad


def list_predict_inputs(inputs: Sequence[str | os.PathLike], output_dir: Path,
                        exclude: Callable[[Path], bool] | None = None) -> tuple[list[RayInput], list[InputFailure]]:
    """(inputs in order, each with its output base; failures found while listing: missing paths, unsupported
    files, videos, folders named like images, unlistable shards)."""
    items: list[RayInput] = []
    failures: list[InputFailure] = []
    entries = []
    for entry in map(os.fspath, inputs):
        if Path(entry).is_dir() and (Path(entry) / "index.json").is_file():  # a shard folder (sapiens2 curate)
            entries += sorted(str(p) for p in Path(entry).glob("*.tar"))
        else:
            entries.append(entry)
    local = [entry for entry in entries if _is_local(entry)]
    if local:
        _discover(local, exclude=exclude, items=items, failures=failures)
    for entry in entries:
        if not _is_local(entry):
            _other(entry, items=items, failures=failures, listed=False)
    unique = {}
    for item in items:  # first occurrence wins, as in discovery
        unique.setdefault(item.source, item)
    items = list(unique.values())
    bases = output_bases(items, output_dir)
    out = []
    for item, base in zip(items, bases):
        out.append(RayInput(item.source, item.path, item.offset, item.size, item.relative_name,
                            base.relative_to(output_dir).as_posix(), item.is_video))
    return out, failures
