"""The two Ray stages of ``predict --engine ray``, one shard (a fixed group of inputs) per call:

- :func:`~sapiens2.cluster.decode.decode_shard` (a Ray task, CPU, no torch in its process): read and decode the
  shard's images with the local job's readers (:func:`~sapiens2.io.load_image` for files,
  :func:`~sapiens2.io.decode_image` for shard members and URIs); an unreadable input becomes its reason;
- :class:`ShardPredictor` (an actor: the model is loaded once per worker, on its GPU or a share of the CPUs):
  predicts the decoded images in the predictor's batches, writes them with the local job's writers
  (:mod:`.formats`), then commits the shard's manifest rows as one Parquet part, atomically and last. A part on
  disk is what makes a shard done for a resumed run.

Every input the model has done is also journaled at once (``<parts>/journal/<shard>/<uid>.pkl``: its manifest row
and, for the shard formats, its encoded outputs), after its outputs are written. A worker that dies mid-shard (a
killed process, an OOM) leaves no part and no shard file, only whole per-input files and journal entries: the
retried shard takes the journaled inputs as they are and gives the model only the rest, so nothing is predicted
twice. An entry counts only while its input file is unchanged (size and modification time, as the local job's
completion records: :func:`~sapiens2.io.identity.file_identity`) and, for ``files``, its outputs are there.
The shard's journal is removed once its part is committed.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.cluster.commits import claim_commit
from sapiens2.cluster.decode import decode_shard, input_identity
from sapiens2.cluster.listing import make_uid
from sapiens2.cluster.tables import write_table_atomic
from sapiens2.io import atomic_path

from ..bookkeeping import failure_reason, predict_input
from .formats import make_sink
from .inputs import RayInput

__all__ = ["MANIFEST_COLUMNS", "ShardPredictor", "decode_shard", "input_identity", "journal_dir", "part_path",
           "write_journal_entry"]

# One manifest row per input (the parts hold the same columns).
MANIFEST_COLUMNS = ("uid", "index", "input", "shard", "status", "reason", "people", "whole_image_fallback",
                    "height", "width", "decode_s", "model_s", "write_s", "outputs", "input_bytes",
                    "input_modified_ns")
JOURNAL_DIR = "journal"


def part_path(parts_dir: str | Path, shard: str) -> Path:
    return Path(parts_dir) / f"part-{shard}.parquet"


def journal_dir(parts_dir: str | Path, shard: str) -> Path:
    return Path(parts_dir) / JOURNAL_DIR / shard


def write_journal_entry(parts_dir: str | Path, shard: str, row: dict[str, Any], sink_row: Any = None,
                        run: str = "") -> None:
    """Journal one input as done (atomically): its manifest row and, for the shard formats, its shard row;
    ``run``: the run that did it (carried inputs of another run count as skipped, of this one as done)."""
    path = journal_dir(parts_dir, shard) / f"{row['uid']}.pkl"
    with atomic_path(path) as temp:
        temp.write_bytes(pickle.dumps({"row": row, "sink": sink_row, "run": run}, protocol=5))


def _read_journal(parts_dir: Path, shard: str) -> dict[str, dict[str, Any]]:
    """The shard's journaled inputs by uid (an unreadable entry is ignored: its input is done again)."""
    folder = journal_dir(parts_dir, shard)
    entries = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.pkl")):
            try:
                entry = pickle.loads(path.read_bytes())
                entries[entry["row"]["uid"]] = entry
            except Exception:  # a damaged entry: redo that input
                continue
    return entries


def _row(item: RayInput, index: int, shard: str, **values) -> dict[str, Any]:
    row = {"uid": make_uid(item.source), "index": index, "input": item.source, "shard": shard, "status": "ok",
           "reason": "", "people": -1, "whole_image_fallback": False, "height": -1, "width": -1, "decode_s": 0.0,
           "model_s": 0.0, "write_s": 0.0, "outputs": [], "input_bytes": -1, "input_modified_ns": -1}
    row.update(values)
    return row


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): in a new actor, Ray's process start and the
    imports that unpickling the actor's arguments brought in (torch, the model code), before ``__init__``."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat", encoding="ascii") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
        with open("/proc/uptime", encoding="ascii") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class ShardPredictor:
    """Ray actor: one predictor, many shards. ``make_predictor``: a picklable zero-argument factory (e.g.
    ``functools.partial(Predictor, tasks, model=..., device=...)``), called once in the worker. ``commit_budget``:
    commit only that many shards in all, across workers (a deterministic simulated crash: tests, demos); a shard
    beyond it is left untouched, as if the run had died before it started."""

    def __init__(self, make_predictor: Callable[[], Any], plan, fmt: str, output_dir: str, parts_dir: str,
                 commit_budget: int | None = None, threads: int | None = None, run: str = "",
                 run_started_at: float = 0.0):
        # a process Ray had started before the run (an idle worker it reuses) is only counted from the run's start
        self.process_s = min(_process_age(), time.time() - run_started_at) if run_started_at else _process_age()
        began = time.perf_counter()
        import cv2
        import torch

        if threads:  # torch's and OpenCV's pools alike: workers sharing the cores must not oversubscribe them
            torch.set_num_threads(int(threads))
            cv2.setNumThreads(int(threads))
        self.threads = (torch.get_num_threads(), cv2.getNumThreads())
        self.predictor = make_predictor()
        self.plan = plan.with_pose_settings(self.predictor)  # pose files say how they were made, as locally
        self.fmt = fmt
        self.output_dir = Path(output_dir)
        self.parts_dir = Path(parts_dir)
        self.commit_budget = commit_budget
        self.run = run
        self.start_s = time.perf_counter() - began  # the model's loading, reported with the first shard
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.ready_at = time.time()
        self.start_cpu_s = time.process_time()  # all this process's CPU so far: Ray's start, imports, the model

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = []
        for shard, index, inputs, payload, decode_cpu in zip(batch["shard"], batch["index"], batch["inputs"],
                                                             batch["payload"], batch["decode_cpu_s"]):
            began, cpu = time.time(), time.process_time()
            stats.append(self.run_shard(str(shard), int(index), str(inputs), bytes(payload)))
            stats[-1].update(worker=self.name, ready_at=self.ready_at, began=began, ended=time.time(),
                             cpu_s=time.process_time() - cpu, start_cpu_s=self.start_cpu_s,
                             decode_cpu_s=float(decode_cpu), torch_threads=self.threads[0],
                             cv2_threads=self.threads[1])
            self.start_cpu_s = 0.0  # reported once
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

    def _carried(self, entry: dict[str, Any] | None, identity: tuple[int, int]) -> bool:
        """Whether a journaled input still stands: its input file unchanged and (``files``) its outputs there."""
        if entry is None or (entry["row"]["input_bytes"], entry["row"]["input_modified_ns"]) != tuple(identity):
            return False
        return self.fmt != "files" or all((self.output_dir / name).is_file() for name in entry["row"]["outputs"])

    def run_shard(self, shard: str, index: int, inputs: str, payload: bytes) -> dict[str, Any]:
        stats = {"shard": shard, "committed": False, "ok": 0, "failed": 0, "predicted": 0, "people": 0,
                 "carried": 0, "stage_s": "{}"}
        if self.commit_budget is not None and not claim_commit(self.parts_dir, self.commit_budget):
            return stats
        items = [RayInput(**entry) for entry in json.loads(inputs)]
        decoded = pickle.loads(payload)
        journal = _read_journal(self.parts_dir, shard)
        sink = make_sink(self.fmt, self.plan, self.output_dir, int(shard.split("-", 1)[0]))
        rows = {}
        good = []
        stage_s: dict[str, float] = {}
        for k, (item, dec) in enumerate(zip(items, decoded)):
            position = index + k
            identity = dec["identity"]
            entry = journal.get(make_uid(item.source))
            if self._carried(entry, identity):  # done before a crash (or by an earlier run): not predicted again
                rows[item.source] = {**entry["row"], "index": position, "shard": shard}
                if entry["sink"] is not None:
                    sink.rows.append(entry["sink"])
                stats["carried"] += entry["row"]["status"] == "ok" and entry.get("run") != self.run
                continue
            ident = dict(input_bytes=identity[0], input_modified_ns=identity[1])
            if item.is_video:
                rows[item.source] = self._run_video(item, position, shard, ident, stats, stage_s)
                write_journal_entry(self.parts_dir, shard, rows[item.source], None, self.run)
            elif dec["rgb"] is None:
                rows[item.source] = _row(item, position, shard, status="failed", reason=dec["reason"],
                                         decode_s=dec["decode_s"], **ident)
            else:
                h, w = dec["rgb"].shape[:2]
                rows[item.source] = _row(item, position, shard, height=h, width=w, decode_s=dec["decode_s"], **ident)
                good.append((item, dec))
        stage_s["decode"] = stage_s.get("decode", 0.0) + sum(d["decode_s"] for d in decoded)
        for (item, dec), prediction in self._predictions(good):
            stats["predicted"] += 1
            row = rows[item.source]
            error = prediction if isinstance(prediction, BaseException) else getattr(prediction, "error", None)
            sink_row = None
            if error is not None:
                row.update(status="failed", reason=failure_reason(error))
            else:
                for stage, seconds in (prediction.timings or {}).items():
                    stage_s[stage] = stage_s.get(stage, 0.0) + float(seconds)
                row["model_s"] = float(sum((prediction.timings or {}).values()))
                pose = prediction.pose
                if pose is not None:
                    row["whole_image_fallback"] = bool(pose.whole_image_fallback)
                    row["people"] = 0 if pose.whole_image_fallback else pose.num_people
                start = time.perf_counter()
                try:
                    before = len(sink.rows)
                    row["outputs"] = sink.add(item, row["uid"], prediction, dec["rgb"], dec["data"])
                    sink_row = sink.rows[-1] if len(sink.rows) > before else None
                except Exception as exc:  # a failed write fails this input only
                    row.update(status="failed", reason=failure_reason(exc))
                row["write_s"] = time.perf_counter() - start
            write_journal_entry(self.parts_dir, shard, row, sink_row, self.run)  # after its outputs: it is done
        start = time.perf_counter()
        order = {item.source: k for k, item in enumerate(items)}
        sink.rows.sort(key=lambda r: order[r["input"]])  # carried and new rows in input order
        sink.close()
        stage_s["write"] = sum(r["write_s"] for r in rows.values()) + time.perf_counter() - start
        stage_s["worker_start"], self.start_s = self.start_s, 0.0
        stage_s["worker_process"], self.process_s = self.process_s, 0.0
        self._commit(shard, [rows[item.source] for item in items])
        shutil.rmtree(journal_dir(self.parts_dir, shard), ignore_errors=True)  # the part holds it all now
        stats.update(committed=True, ok=sum(r["status"] == "ok" for r in rows.values()),
                     failed=sum(r["status"] != "ok" for r in rows.values()),
                     people=sum(max(r["people"], 0) for r in rows.values()), stage_s=json.dumps(stage_s))
        return stats

    def _run_video(self, item: RayInput, index: int, shard: str, ident: dict, stats: dict,
                   stage_s: dict[str, float]) -> dict[str, Any]:
        """A whole video with the local job's video pipeline (same frames, tracking, smoothing and files); its
        manifest row. A video whose completion record is complete (done before a crash) is not predicted again."""
        from sapiens2.io import InputItem

        from ..runner import PredictJob

        if self.fmt != "files":
            return _row(item, index, shard, status="failed", reason="a video: its outputs are per-video files; "
                        "use --format files (the default) for videos", **ident)
        job = PredictJob(self.predictor, self.plan.tasks, self.output_dir, self.plan.options,
                         overwrite=self.plan.overwrite, every=self.plan.every, video=self.plan.video,
                         settings=self.plan.settings, read_workers=1, write_workers=1)
        base = Path(item.base)  # its base among all inputs: the local job's name for it, clashes resolved
        local = InputItem(Path(item.path), "video", Path(item.base + Path(item.path).suffix))
        start = time.perf_counter()
        summary = job.run([local])
        stats["predicted"] += summary.skipped == 0
        for stage, seconds in summary.stage_s.items():
            stage_s[stage] = stage_s.get(stage, 0.0) + float(seconds)
        if summary.failed or summary.interrupted or summary.done + summary.skipped != 1:
            reason = summary.failed[0].reason if summary.failed else "interrupted"
            return _row(item, index, shard, status="failed", reason=reason, **ident)
        outputs = [p.relative_to(self.output_dir).as_posix()
                   for p in self.plan.expected_outputs(item, self.output_dir / base)]
        return _row(item, index, shard, people=summary.people, model_s=time.perf_counter() - start,
                    outputs=outputs, **ident)

    def _commit(self, shard: str, rows: list[dict[str, Any]]) -> None:
        """The shard's manifest rows, written last and atomically: from now on the shard is done."""
        write_table_atomic(rows_table(rows), part_path(self.parts_dir, shard))


def rows_table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema([("uid", pa.string()), ("index", pa.int64()), ("input", pa.string()), ("shard", pa.string()),
                        ("status", pa.string()), ("reason", pa.string()), ("people", pa.int64()),
                        ("whole_image_fallback", pa.bool_()), ("height", pa.int64()), ("width", pa.int64()),
                        ("decode_s", pa.float64()), ("model_s", pa.float64()), ("write_s", pa.float64()),
                        ("outputs", pa.list_(pa.string())), ("input_bytes", pa.int64()),
                        ("input_modified_ns", pa.int64())])
    return pa.table({name: [r[name] for r in rows] for name in MANIFEST_COLUMNS}, schema=schema)
