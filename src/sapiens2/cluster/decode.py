"""The decode stage of ``predict --engine ray`` as a Ray task, kept free of torch: the worker processes that run
it only read and decode images, so they must not pay for importing the model stack (seconds and hundreds of MB
per process, competing with the model workers for the same cores).

An entry is a listed input (``source``, ``path``, ``offset``, ``size``, ``is_video``: see
:class:`sapiens2.serving.ray_engine.RayInput`); the output is one pickled list per shard: per input its RGB array
(or None), the reason it could not be read, seconds spent, the encoded bytes (when asked) and the identity of the
file it was read from (size, modification time) taken before reading.
"""
from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import cv2

from sapiens2.errors import failure_reason
from sapiens2.io import DEFAULT_MAX_PIXELS, decode_image, load_image
from sapiens2.io.identity import file_identity

from .listing import is_uri, read_item_bytes

__all__ = ["decode_shard", "input_identity"]


def input_identity(path: str) -> tuple[int, int]:
    """(bytes, modification ns) of the file an input is read from (for a tar member: its shard), as the local
    job's completion records keep it; (-1, -1) for URIs and anything that is not a file (never "changed")."""
    identity = None if is_uri(path) else file_identity(path)
    return (-1, -1) if identity is None else (int(identity["bytes"]), int(identity["modified_ns"]))


def decode_shard(row: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 keep_bytes: bool = False) -> dict[str, Any]:
    """Ray task: the shard's images decoded (pickled: one object per shard, arrays of any size). Videos are not
    read here: the worker that predicts a video reads it frame by frame. ``decode_cpu_s``: this thread's CPU
    seconds for the shard. OpenCV runs single-threaded here: decode tasks share the cores with the model workers
    and run side by side, so one thread each is the most they should take."""
    cv2.setNumThreads(1)
    cpu = time.thread_time()
    decoded = []
    for item in json.loads(row["inputs"]):
        start = time.perf_counter()
        identity = input_identity(item["path"])  # before reading: a change after this is seen by the next run
        data = None
        if item.get("is_video"):
            decoded.append({"rgb": None, "reason": None, "decode_s": 0.0, "data": None, "identity": identity})
            continue
        try:
            if int(item["offset"]) < 0 and not is_uri(item["path"]):  # a whole local file, as the local job reads it
                loaded = load_image(item["path"], max_pixels=max_pixels)
                data = Path(item["path"]).read_bytes() if keep_bytes else None
            else:
                data = read_item_bytes({"path": item["path"], "offset": item["offset"], "size": item["size"]})
                loaded = decode_image(data, name=item["source"], max_pixels=max_pixels)
            decoded.append({"rgb": loaded.rgb, "reason": None, "decode_s": time.perf_counter() - start,
                            "data": data if keep_bytes else None, "identity": identity})
        except Exception as exc:  # ImageReadError and anything else a broken input triggers: this input only
            decoded.append({"rgb": None, "reason": failure_reason(exc), "decode_s": time.perf_counter() - start,
                            "data": None, "identity": identity})
    return {"shard": row["shard"], "index": row["index"], "inputs": row["inputs"],
            "payload": pickle.dumps(decoded, protocol=5), "decode_cpu_s": time.thread_time() - cpu}
