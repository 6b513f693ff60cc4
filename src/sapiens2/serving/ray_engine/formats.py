"""Where ``predict --engine ray`` puts a shard's predictions: the local job's per-input files (``files``, the
default: the same names, bytes and completion records as ``sapiens2 predict``), or one file per shard under
``OUT/predictions/``: ``parquet`` (one row per input: pose boxes, box scores, keypoints and their scores as list
columns; every file the local job would write as a binary column named by its suffix, e.g. ``seg.png``,
``normal.npy``, ``pose.json``) or ``webdataset`` (a tar of ``<uid>.<input ext>``, ``<uid>.json`` with the input's
name and size, and ``<uid>.<suffix>`` per output file, e.g. ``<uid>.seg.png``: ready for training or distillation).

Both shard formats hold exactly the bytes the local job writes (they are written by the same
:func:`~sapiens2.serving.outputs.write_prediction` into a scratch folder, then read back), and are written
atomically (temporary name, then rename).
"""
from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.cluster.tables import write_table_atomic
from sapiens2.data.shards import add_member
from sapiens2.io.writers import atomic_path
from sapiens2.tasks.results import Prediction

from ..completion import clear_record
from ..image_batches import write_image_outputs
from ..outputs import write_prediction

__all__ = ["FORMATS", "PREDICTIONS_DIR", "ShardSink", "make_sink"]

FORMATS = ("files", "parquet", "webdataset")
PREDICTIONS_DIR = "predictions"


@dataclass
class ShardSink:
    """Collects one shard's predictions; ``add`` returns the input's output locations (relative to the output
    folder), ``close`` writes the shard file (shard formats) and returns its location, or None."""

    fmt: str
    plan: Any  # JobPlan
    output_dir: Path
    shard_index: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def shard_file(self) -> str:
        suffix = ".parquet" if self.fmt == "parquet" else ".tar"
        return f"{PREDICTIONS_DIR}/shard-{self.shard_index:06d}{suffix}"

    def add(self, item, uid: str, prediction: Prediction, rgb: np.ndarray, data: bytes | None) -> list[str]:
        if self.fmt == "files":
            base = self.output_dir / item.base
            clear_record(base)  # half-replaced outputs must not pass for complete if this stops midway
            written = write_image_outputs(self.plan, prediction, rgb, item, base)
            return [p.relative_to(self.output_dir).as_posix() for p in written]
        with tempfile.TemporaryDirectory(prefix="s2-shard-") as scratch:
            base = Path(scratch) / "x"
            written = write_prediction(prediction, rgb, base, self.plan.tasks, self.plan.options)
            files = {p.name[len(base.name):].lstrip("."): p.read_bytes() for p in written}
        row = {"uid": uid, "input": item.source, "height": int(rgb.shape[0]), "width": int(rgb.shape[1]),
               "files": files, "data": data, "ext": Path(item.source).suffix.lower().lstrip(".") or "img"}
        pose = prediction.pose
        if pose is not None:
            row["pose"] = {"pose_boxes": np.asarray(pose.boxes, np.float32).tolist(),
                           "pose_box_scores": np.asarray(pose.box_scores, np.float32).tolist(),
                           "pose_keypoints": np.asarray(pose.keypoints, np.float32).tolist(),
                           "pose_keypoint_scores": np.asarray(pose.scores, np.float32).tolist()}
        self.rows.append(row)
        return [self.shard_file]

    def close(self) -> str | None:
        if self.fmt == "files" or not self.rows:
            return None
        path = self.output_dir / self.shard_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "parquet":
            self._write_parquet(path)
        else:
            self._write_tar(path)
        return self.shard_file

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa

        columns: dict[str, Any] = {k: [r[k] for r in self.rows] for k in ("uid", "input", "height", "width")}
        if "pose" in self.rows[0]:
            for name in self.rows[0]["pose"]:
                columns[name] = [r["pose"][name] for r in self.rows]
        for suffix in self.rows[0]["files"]:
            columns[suffix] = pa.array([r["files"][suffix] for r in self.rows], pa.binary())
        write_table_atomic(pa.table(columns), path)

    def _write_tar(self, path: Path) -> None:
        with atomic_path(path) as temp:
            with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for r in self.rows:
                    if r["data"] is not None:
                        add_member(tar, f"{r['uid']}.{r['ext']}", r["data"])
                    meta = {"uid": r["uid"], "input": r["input"], "height": r["height"], "width": r["width"]}
                    add_member(tar, f"{r['uid']}.json", json.dumps(meta, sort_keys=True).encode())
                    for suffix, blob in r["files"].items():
                        add_member(tar, f"{r['uid']}.{suffix}", blob)


def make_sink(fmt: str, plan, output_dir: Path, shard_index: int) -> ShardSink:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: use {', '.join(FORMATS)}")
    return ShardSink(fmt, plan, Path(output_dir), shard_index)
