"""Atomic output writers: each file is written to a hidden temporary file in the destination folder and
moved into place with ``os.replace``, so a crash or a failed write never leaves a partial file under the
final name (and never damages an existing one). Files are not fsync'ed: the guarantee is against
interrupted processes, not power loss.

Formats: JSON, PNG (8- and 16-bit), other OpenCV image formats by extension, NPY, and PLY point clouds.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .errors import OutputWriteError
from .video import TEMP_TAG

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def ensure_directory(folder: PathLike) -> Path:
    """Create ``folder`` (and parents) if needed; raise :class:`OutputWriteError` if impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(folder, f"cannot create output directory ({exc.strerror or exc})") from exc
    return folder


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique temporary name beside ``path`` (the tag lets ``remove_stale_temp_files`` find leftovers)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_TAG}")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary sibling path for a writer that takes a path (safetensors, parquet, tarfile); on normal exit it
    replaces ``path``, on an exception it is removed and the exception propagates unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(path)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on normal exit it replaces ``path``.

    On an exception the temporary file is removed and the exception propagates; ``path`` is untouched.
    The file gets the usual permissions (0666 minus umask), like a plainly created one.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', got {mode!r}")
    path = Path(path)
    ensure_directory(path.parent)
    temp = temporary_sibling(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise OutputWriteError(path, f"cannot create a file in {str(path.parent)!r} "
                               f"({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError):
            raise OutputWriteError(path, exc.strerror or str(exc)) from exc
        raise


def write_bytes(path: PathLike, data: bytes | memoryview) -> Path:
    """Atomically write raw bytes (or any contiguous buffer, e.g. an encoder's array, without copying it)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2, allow_nan: bool = False) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON. NumPy arrays and scalars and paths are converted.

    The text is produced before the file is opened, so an unserialisable object leaves no file. NaN and
    infinity are rejected (they are not JSON) unless ``allow_nan``.
    """
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan, default=_json_default, ensure_ascii=False)
    with atomic_open(path, "w") as handle:
        handle.write(text)
        handle.write("\n")
    return Path(path)


_REORDER_BAND_BYTES = 1 << 20  # rows per in-place channel swap: OpenCV copies its source when dst is the source


def _to_bgr_order(image: np.ndarray, in_place: bool = False) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; got {image.shape}")
    code = cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    if not (in_place and image.flags.c_contiguous and image.flags.writeable):
        return cv2.cvtColor(image, code)
    # in place (an array the caller gives up), a band of rows at a time: cvtColor with dst=src copies the source
    # first, which for a whole 24 MP picture was 72 MB more at the peak of writing it
    step = max(1, _REORDER_BAND_BYTES // max(1, image.shape[1] * image.shape[2] * image.itemsize))
    for top in range(0, image.shape[0], step):
        band = image[top:top + step]
        cv2.cvtColor(band, code, dst=band)
    return image


# PNG of a map of a few distinct values (class ids): zlib's run-length strategy and no row filters. On a 24 MP
# class-id map, against the default (adaptive filters) at level 1: 3.5x less CPU time (0.07 s against 0.25 s) and a
# smaller file (1.9 MB against 3.3 MB); on a map of large flat regions 5x less time and a quarter of the size.
LABEL_MAP_PNG = (cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE, cv2.IMWRITE_PNG_FILTER,
                 cv2.IMWRITE_PNG_FILTER_NONE)
# PNG of a picture (photo-like RGB: overlays): Huffman coding only (no LZ matching) with the Sub filter on every
# row, in place of the default adaptive filters with LZ matching. Measured on 8 MP pictures (a smooth photo, the
# same with a flat blended region, a noisy class-colour overlay), zlib level 1, CPU time: 0.20-0.27 s against
# 0.36-0.42 s with the run-length strategy and the Paeth filter (chosen before: 1.6-1.7x faster than the default,
# 17% smaller) and 0.67-0.73 s with the default, for files 9-15% larger than with run-length + Paeth (12.4 MB
# against 10.7; 11.8 against 10.2; 12.0 against 11.1) and about the default's size. Same pixels. Also the uint16
# depth map: at 1024x768, 10.8 ms against 20.7 (default filters, level 1) for a smooth one, same size; 13.4 ms
# against 41.9 for a noise-like one (random weights), 2% smaller.
PICTURE_PNG = (cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY, cv2.IMWRITE_PNG_FILTER,
               cv2.IMWRITE_PNG_FILTER_SUB)


def encode_image(image: np.ndarray, extension: str = ".png", *, jpeg_quality: int = 95,
                 png_compression: int = 3, consume: bool = False, label_map: bool = False,
                 picture: bool = False) -> bytes:
    """Encode an RGB/RGBA/gray array (channel order RGB) with OpenCV; ``extension`` picks the format.

    PNG takes uint8 or uint16; bool is stored as 0/255. JPEG drops alpha (it cannot store it). ``consume``: the
    caller gives the array up, so its channels may be reordered in place (its content is undefined afterwards).
    ``label_map``: a PNG of a few distinct values (class ids), encoded with :data:`LABEL_MAP_PNG` (same pixels).
    ``picture``: a photo-like PNG, encoded with :data:`PICTURE_PNG` (same pixels, faster).
    """
    return _encoded(image, extension, jpeg_quality=jpeg_quality, png_compression=png_compression, consume=consume,
                    label_map=label_map, picture=picture).tobytes()


def _encoded(image: np.ndarray, extension: str, **options) -> np.ndarray:
    """:func:`encode_image`'s file content as OpenCV's uint8 array."""
    return _imencode(*_prepared(image, extension, **options))


def _imencode(ready: np.ndarray, extension: str, params: list[int]) -> np.ndarray:
    ok, encoded = cv2.imencode(extension, ready, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {ready.dtype} {ready.shape} image as {extension}")
    return encoded


def _prepared(image: np.ndarray, extension: str, *, jpeg_quality: int = 95, png_compression: int = 3,
              consume: bool = False, label_map: bool = False, picture: bool = False
              ) -> tuple[np.ndarray, str, list[int]]:
    """(the array as OpenCV takes it (BGR order, contiguous), the normalised extension, OpenCV's parameters)."""
    image = np.asarray(image)
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"images must be uint8 or uint16 to encode, got {image.dtype} (convert first)")
    extension = extension.lower() if extension.startswith(".") else "." + extension.lower()
    if extension in (".jpg", ".jpeg") and image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    params: list[int] = []
    if extension in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif extension == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)] + (list(LABEL_MAP_PNG) if label_map else [])
        if picture and not label_map:
            params += list(PICTURE_PNG)
    return np.ascontiguousarray(_to_bgr_order(image, consume)), extension, params


def _write_encoded(path: PathLike, image: np.ndarray, extension: str, **options) -> Path:
    """Encode ``image`` into ``path`` atomically, straight into the temporary file (``cv2.imwrite``, the same bytes
    as ``cv2.imencode``): in memory, OpenCV's buffer grows to about twice the file and is copied once more into an
    array (a 35 MB cut-out PNG of a 24 MP image: 70 MB more at the peak). Where OpenCV does not write the file
    (a name it does not take, a full disk, ...), the in-memory encoding through :func:`atomic_open` says why."""
    path = Path(path)
    ready, extension, params = _prepared(image, extension, **options)
    ensure_directory(path.parent)
    temp = temporary_sibling(path)
    temp = temp.with_name(temp.name + extension)  # OpenCV picks the format by the extension
    written = False
    try:
        written = bool(cv2.imwrite(str(temp), ready, params))
        if written:
            os.replace(temp, path)
    except (cv2.error, UnicodeError, OSError):
        written = False
    finally:
        if not written:
            with suppress(OSError):  # e.g. a name too long to exist
                temp.unlink(missing_ok=True)
    return path if written else write_bytes(path, _imencode(ready, extension, params).data)


def write_image(path: PathLike, image: np.ndarray, *, jpeg_quality: int = 95, png_compression: int = 3) -> Path:
    """Atomically write an RGB (or RGBA / gray) image; the format follows the file extension."""
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"output image path {str(path)!r} has no extension to choose a format")
    return _write_encoded(path, image, path.suffix, jpeg_quality=jpeg_quality, png_compression=png_compression)


def write_png(path: PathLike, image: np.ndarray, *, compression: int = 3, consume: bool = False,
              label_map: bool = False, picture: bool = False) -> Path:
    """Atomically write a PNG: uint8 or uint16; (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA. ``consume``,
    ``label_map`` and ``picture``: see :func:`encode_image`."""
    return _write_encoded(path, image, ".png", png_compression=compression, consume=consume, label_map=label_map,
                          picture=picture)


def write_npy(path: PathLike, array: np.ndarray) -> Path:
    """Atomically write one array in NumPy's ``.npy`` format (no pickled objects)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise ValueError("refusing to write an object array to .npy (it would need pickle)")
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return Path(path)


def write_ply(path: PathLike, points: np.ndarray, colors: np.ndarray | None = None, *,
              normals: np.ndarray | None = None, mask: np.ndarray | None = None,
              binary: bool = True, drop_nonfinite: bool = True) -> Path:
    """Atomically write a point cloud as PLY: ``binary_little_endian 1.0`` by default, ``ascii`` if
    ``binary=False``.

    Vertex properties, in order: ``float x, y, z``; then ``float nx, ny, nz`` if ``normals``; then
    ``uchar red, green, blue`` if ``colors`` (uint8 RGB, or floats in [0, 1]). ``points`` may be (N, 3) or
    a (H, W, 3) pointmap; ``colors``/``normals`` share its leading shape; ``mask`` (leading shape, bool)
    keeps only the selected points. Points with a NaN/inf coordinate are dropped unless
    ``drop_nonfinite=False``.
    """
    points = np.asarray(points)
    if points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {points.shape}")
    lead = points.shape[:-1]
    keep = np.ones(lead, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != lead:
        raise ValueError(f"mask shape {keep.shape} does not match points {lead}")
    if drop_nonfinite:
        keep = keep & np.isfinite(points).all(axis=-1)
    fields: list[tuple[str, str, np.ndarray]] = [("xyz", "<f4", points[keep].astype(np.float32))]
    header_props = ["property float x", "property float y", "property float z"]
    if normals is not None:
        normals = np.asarray(normals)
        if normals.shape != points.shape:
            raise ValueError(f"normals shape {normals.shape} does not match points {points.shape}")
        fields.append(("normal", "<f4", normals[keep].astype(np.float32)))
        header_props += ["property float nx", "property float ny", "property float nz"]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise ValueError(f"colors shape {colors.shape} does not match points {points.shape}")
        if colors.dtype != np.uint8:
            colors = np.rint(np.clip(colors.astype(np.float32), 0.0, 1.0) * 255.0)
        fields.append(("rgb", "u1", colors[keep].astype(np.uint8)))
        header_props += ["property uchar red", "property uchar green", "property uchar blue"]

    count = int(keep.sum())
    header = "\n".join(["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
                        "comment written by sapiens2", f"element vertex {count}", *header_props,
                        "end_header"]) + "\n"
    with atomic_open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        if binary:
            vertex = np.empty(count, dtype=[(name, dtype, (3,)) for name, dtype, _ in fields])
            for name, _, values in fields:
                vertex[name] = values
            handle.write(vertex.tobytes())
        else:
            # %.9g keeps every float32 exactly; colours are whole numbers printed with %d.
            table = np.concatenate([values.astype(np.float64) for _, _, values in fields], axis=1)
            formats = [("%.9g" if dtype == "<f4" else "%d") for _, dtype, _ in fields for _ in range(3)]
            np.savetxt(handle, table, fmt=formats, delimiter=" ")
    return Path(path)


def outputs_exist(expected: Iterable[PathLike]) -> bool:
    """True when every expected output exists as a non-empty file (writes are atomic, so that means done).

    An empty list gives False: with nothing to check there is no evidence the input was processed.
    """
    paths = [Path(p) for p in expected]
    return bool(paths) and all(p.is_file() and p.stat().st_size > 0 for p in paths)


def should_skip(expected: Iterable[PathLike], overwrite: bool = False) -> bool:
    """Resume rule: skip an input when not overwriting and all its expected outputs already exist."""
    return not overwrite and outputs_exist(expected)


def remove_stale_temp_files(folder: PathLike, recursive: bool = True) -> int:
    """Delete temporary files left by writes that were killed mid-way; returns how many were removed.

    Only names our writers create (hidden, containing ``.s2tmp``) are touched. Do not run this while
    another process is writing into the same folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f".*{TEMP_TAG}*"
    removed = 0
    for temp in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
        if temp.is_file():
            temp.unlink(missing_ok=True)
            removed += 1
    if removed:
        logger.info("removed %d stale temporary file(s) under %s", removed, folder)
    return removed
