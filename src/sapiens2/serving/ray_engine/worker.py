"""The two Ray stages of ``predict --engine ray``, one shard (a fixed group of inputs) per call:

- :func:`decode_shard` (a Ray task, CPU): read and decode the shard's images with the local job's readers
  (:func:`~sapiens2.io.load_image` for files, :func:`~sapiens2.io.decode_image` for shard members and URIs); an
  unreadable input becomes its reason;
- :class:`ShardPredictor` (an actor: the model is loaded once per worker, on its GPU or a share of the CPUs):
  predicts the decoded images in the predictor's batches, writes them with the local job's writers
  (:mod:`.formats`), then commits the shard's manifest rows as one Parquet part, atomically and last. A part on
  disk is what makes a shard done for a resumed run.
"""
from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.cluster.commits import claim_commit
from sapiens2.cluster.listing import make_uid, read_item_bytes
from sapiens2.cluster.tables import write_table_atomic
from sapiens2.io import DEFAULT_MAX_PIXELS, decode_image, load_image

from ..bookkeeping import failure_reason, predict_input
from .formats import make_sink
from .inputs import RayInput

__all__ = ["MANIFEST_COLUMNS", "ShardPredictor", "decode_shard", "part_path"]

# One manifest row per input (the parts hold the same columns).
MANIFEST_COLUMNS = ("uid", "index", "input", "shard", "status", "reason", "people", "whole_image_fallback",
                    "height", "width", "decode_s", "model_s", "write_s", "outputs")


def part_path(parts_dir: str | Path, shard: str) -> Path:
    return Path(parts_dir) / f"part-{shard}.parquet"


def decode_shard(row: dict[str, Any], max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 keep_bytes: bool = False) -> dict[str, Any]:
    """Ray task: the shard's images decoded (pickled: one object per shard, arrays of any size)."""
    decoded = []
    for entry in json.loads(row["inputs"]):
        item = RayInput(**entry)
        start = time.perf_counter()
        data = None
        try:
            if item.in_file:  # as the local job reads it: same checks, same reasons
                loaded = load_image(item.path, max_pixels=max_pixels)
                data = Path(item.path).read_bytes() if keep_bytes else None
            else:
                data = read_item_bytes({"path": item.path, "offset": item.offset, "size": item.size})
                loaded = decode_image(data, name=item.source, max_pixels=max_pixels)
            decoded.append({"rgb": loaded.rgb, "reason": None, "decode_s": time.perf_counter() - start,
                            "data": data if keep_bytes else None})
        except Exception as exc:  # ImageReadError and anything else a broken input triggers: this input only
            decoded.append({"rgb": None, "reason": failure_reason(exc), "decode_s": time.perf_counter() - start,
                            "data": None})
    return {"shard": row["shard"], "index": row["index"], "inputs": row["inputs"],
            "payload": pickle.dumps(decoded, protocol=5)}


def _row(item: RayInput, index: int, shard: str, **values) -> dict[str, Any]:
    row = {"uid": make_uid(item.source), "index": index, "input": item.source, "shard": shard, "status": "ok",
           "reason": "", "people": -1, "whole_image_fallback": False, "height": -1, "width": -1, "decode_s": 0.0,
           "model_s": 0.0, "write_s": 0.0, "outputs": []}
    row.update(values)
    return row


class ShardPredictor:
    """Ray actor: one predictor, many shards. ``make_predictor``: a picklable zero-argument factory (e.g.
    ``functools.partial(Predictor, tasks, model=..., device=...)``), called once in the worker. ``commit_budget``:
    commit only that many shards in all, across workers (a deterministic simulated crash: tests, demos); a shard
    beyond it is left untouched, as if the run had died before it started."""

    def __init__(self, make_predictor: Callable[[], Any], plan, fmt: str, output_dir: str, parts_dir: str,
                 commit_budget: int | None = None, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.predictor = make_predictor()
        self.plan = plan.with_pose_settings(self.predictor)  # pose files say how they were made, as locally
        self.fmt = fmt
        self.output_dir = Path(output_dir)
        self.parts_dir = Path(parts_dir)
        self.commit_budget = commit_budget

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = [self.run_shard(str(shard), int(index), str(inputs), bytes(payload))
                 for shard, index, inputs, payload in zip(batch["shard"], batch["index"], batch["inputs"],
                                                          batch["payload"])]
        return {key: np.asarray([s[key] for s in stats], dtype=object) for key in stats[0]}

    def _predictions(self, good: list) -> Iterator[tuple[Any, Any]]:
        """(job, Prediction or the exception) in order; a failed batch is retried image by image, so only the
        culprit fails (as in the local job)."""
        def request(job):
            item, decoded = job
            return predict_input(decoded["rgb"], source=Path(item.path) if item.in_file else Path(item.source))

        done = 0
        try:
            for prediction in self.predictor.predict_many(request(job) for job in good):
                yield good[done], prediction
                done += 1
        except Exception:
            for job in good[done:]:
                try:
                    yield job, self.predictor.predict(request(job))
                except Exception as exc:
                    yield job, exc

    def run_shard(self, shard: str, index: int, inputs: str, payload: bytes) -> dict[str, Any]:
        stats = {"shard": shard, "committed": False, "ok": 0, "failed": 0, "predicted": 0, "people": 0,
                 "stage_s": "{}"}
        if self.commit_budget is not None and not claim_commit(self.parts_dir, self.commit_budget):
            return stats
        items = [RayInput(**entry) for entry in json.loads(inputs)]
        decoded = pickle.loads(payload)
        rows = {}
        good = []
        for k, (item, dec) in enumerate(zip(items, decoded)):
            position = index + k
            if dec["rgb"] is None:
                rows[item.source] = _row(item, position, shard, status="failed", reason=dec["reason"],
                                         decode_s=dec["decode_s"])
            else:
                h, w = dec["rgb"].shape[:2]
                rows[item.source] = _row(item, position, shard, height=h, width=w, decode_s=dec["decode_s"])
                good.append((item, dec))
        stage_s = {"decode": sum(d["decode_s"] for d in decoded)}
        sink = make_sink(self.fmt, self.plan, self.output_dir, int(shard.split("-", 1)[0]))
        for (item, dec), prediction in self._predictions(good):
            stats["predicted"] += 1
            row = rows[item.source]
            error = prediction if isinstance(prediction, BaseException) else getattr(prediction, "error", None)
            if error is not None:
                row.update(status="failed", reason=failure_reason(error))
                continue
            for stage, seconds in (prediction.timings or {}).items():
                stage_s[stage] = stage_s.get(stage, 0.0) + float(seconds)
            row["model_s"] = float(sum((prediction.timings or {}).values()))
            pose = prediction.pose
            if pose is not None:
                row["whole_image_fallback"] = bool(pose.whole_image_fallback)
                row["people"] = 0 if pose.whole_image_fallback else pose.num_people
            start = time.perf_counter()
            try:
                row["outputs"] = sink.add(item, row["uid"], prediction, dec["rgb"], dec["data"])
            except Exception as exc:  # a failed write fails this input only
                row.update(status="failed", reason=failure_reason(exc))
            row["write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        sink.close()
        stage_s["write"] = sum(r["write_s"] for r in rows.values()) + time.perf_counter() - start
        self._commit(shard, list(rows.values()))
        stats.update(committed=True, ok=sum(r["status"] == "ok" for r in rows.values()),
                     failed=sum(r["status"] != "ok" for r in rows.values()),
                     people=sum(max(r["people"], 0) for r in rows.values()), stage_s=json.dumps(stage_s))
        return stats

    def _commit(self, shard: str, rows: list[dict[str, Any]]) -> None:
        """The shard's manifest rows, written last and atomically: from now on the shard is done."""
        write_table_atomic(rows_table(rows), part_path(self.parts_dir, shard))


def rows_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema([("uid", pa.string()), ("index", pa.int64()), ("input", pa.string()), ("shard", pa.string()),
                        ("status", pa.string()), ("reason", pa.string()), ("people", pa.int64()),
                        ("whole_image_fallback", pa.bool_()), ("height", pa.int64()), ("width", pa.int64()),
                        ("decode_s", pa.float64()), ("model_s", pa.float64()), ("write_s", pa.float64()),
                        ("outputs", pa.list_(pa.string()))])
    return pa.table({name: [r[name] for r in rows] for name in MANIFEST_COLUMNS}, schema=schema)
