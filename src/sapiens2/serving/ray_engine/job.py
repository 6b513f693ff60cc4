"""``sapiens2 predict --engine ray``: the predict job on Ray Data, a thin layer over the local one.

The driver lists the inputs (:mod:`.inputs`), cuts them into fixed shards (``shard_size`` inputs in listing order,
so a re-run cuts the same shards), skips the shards already committed (a Parquet part under
``OUT/.ray-parts/<settings>/``, whose outputs are all still there), and streams the rest through Ray Data:
decode tasks (CPU) -> :class:`~.worker.ShardPredictor` actors (one model per GPU, or per CPU worker) which write
the outputs with the local job's writers and commit the shard. Ray Data's streaming executor keeps a bounded
number of shards in flight (backpressure), however many inputs there are. At the end the parts (and the inputs
that failed while listing) become ``OUT/manifest.parquet``: one row per input, in listing order.

A killed run (Ctrl-C, a lost worker or node) leaves only whole parts: restarting it does the uncommitted shards
only, and of those only the inputs the worker had not journaled (see :mod:`.worker`); a worker that dies is
restarted by Ray Data and its shard retried the same way within the run. ``stop_after_shards=k`` simulates a
crash deterministically (exactly k shards are committed).

An input whose file changed since its shard was committed (size or modification time, as the local job's
completion records compare them) is redone on resume. With ``--format files`` only the changed inputs are: the
rest of the shard's rows are journaled from the old part and carried. With ``parquet`` / ``webdataset`` the shard
file is the unit of output, so its whole shard is done again.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sapiens2.cluster.commits import reset_commit_budget
from sapiens2.cluster.listing import make_uid
from sapiens2.cluster.ray_runtime import connect_ray, require
from sapiens2.cluster.tables import write_table_atomic
from sapiens2.errors import Sapiens2Error, UsageError
from sapiens2.io import DEFAULT_MAX_PIXELS, remove_stale_temp_files

from ..bookkeeping import InputFailure, JobPlan, VideoOptions
from ..completion import own_output_filter
from ..outputs import OutputOptions
from .formats import FORMATS
from .formats import PREDICTIONS_DIR
from .inputs import RayInput, list_predict_inputs
from .usage import ShardSpan, WorkerUsage, steady_state
from .worker import (MANIFEST_COLUMNS, ShardPredictor, decode_shard, input_identity, part_path, rows_table,
                     write_journal_entry)

__all__ = ["PredictInterrupted", "RayOptions", "RaySummary", "predict_ray"]

logger = logging.getLogger(__name__)

PARTS_DIR = ".ray-parts"
MANIFEST = "manifest.parquet"


class PredictInterrupted(Sapiens2Error, RuntimeError):
    """Raised by ``predict_ray(..., stop_after_shards=k)`` after exactly k shards were committed (a simulated
    crash, for tests and demos of resuming)."""


@dataclass(frozen=True)
class RayOptions:
    """How the job runs on Ray. ``address``: a cluster (else ``RAY_ADDRESS``, else a local Ray started for the
    run, with ``num_cpus`` CPUs, 0 = all). ``workers``: model replicas (default: one per GPU, else 1).
    ``num_gpus_per_worker``: GPUs per replica (default 1 when the cluster has GPUs, else 0: CPU workers sharing
    the CPUs). ``shard_size``: inputs per shard, the unit of work, commit and resume. ``format``: files (the local
    job's files), parquet or webdataset (one file per shard under ``OUT/predictions/``). ``threads_per_worker``: torch
    threads of each CPU worker (default: the cluster's CPUs divided among the workers; 1 is much faster on a
    machine whose cores are busy with other work)."""

    address: str = ""
    workers: int | None = None
    num_gpus_per_worker: float | None = None
    shard_size: int = 16
    format: str = "files"
    num_cpus: int = 0
    progress: bool = False
    threads_per_worker: int | None = None  # torch threads of a CPU worker (default: the CPUs shared out)

    def check(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"unknown --format {self.format!r}: use {', '.join(FORMATS)}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.num_gpus_per_worker is not None and self.num_gpus_per_worker < 0:
            raise UsageError(f"--num-gpus-per-worker must be >= 0, got {self.num_gpus_per_worker}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise UsageError(f"--threads-per-worker must be >= 1, got {self.threads_per_worker}")
        if self.shard_size < 1:
            raise UsageError(f"--shard-size must be >= 1, got {self.shard_size}")


@dataclass
class RaySummary:
    """What a Ray run did. ``done``: inputs predicted and written by this run; ``skipped``: inputs done by an
    earlier run (committed shards); ``failed``: every failed input with its reason; ``predicted``: inputs given
    to a model in this run; ``stage_s``: seconds per stage summed over the workers (``worker_process``: a worker's
    process start and imports before it builds its predictor, from the run's start at the earliest;
    ``worker_start``: building the predictor; decode, the predictor's stages, write). ``worker_usage``: per model
    worker that did work, what it was given and its CPU time; ``spans``: when each shard ran; ``started_at``: the
    run's start (epoch seconds); ``driver_cpu_s``, ``decode_cpu_s``: CPU seconds of the driver and of the decode
    tasks."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[InputFailure] = field(default_factory=list)
    predicted: int = 0
    people: int = 0
    shards: int = 0
    shards_run: int = 0
    workers: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    manifest: Path | None = None
    interrupted: bool = False
    worker_usage: dict[str, WorkerUsage] = field(default_factory=dict)
    spans: list[ShardSpan] = field(default_factory=list)
    started_at: float = 0.0
    driver_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0

    @property
    def startup_s(self) -> float | None:
        """Seconds from the run's start until the last worker that did any work had built its model."""
        if not self.worker_usage:
            return None
        return max(w.ready_at for w in self.worker_usage.values()) - self.started_at

    @property
    def steady(self) -> tuple[float, float, float] | None:
        """(inputs/s, seconds, workers busy) once every worker was ready (:func:`~.usage.steady_state`)."""
        if not self.worker_usage:
            return None
        return steady_state(self.spans, max(w.ready_at for w in self.worker_usage.values()))

    def lines(self) -> list[str]:
        rate = self.predicted / self.wall_s if self.wall_s > 0 else 0.0
        out = [f"inputs: {self.total} ({self.done} done, {self.skipped} skipped, {len(self.failed)} failed)",
               f"ray: {self.shards_run} of {self.shards} shard(s) run on {self.workers} worker(s); "
               f"people found: {self.people}",
               f"time: {self.wall_s:.1f} s, {rate:.2f} inputs/s predicted"]
        if self.worker_usage:
            steady = self.steady
            out.append(f"start-up: {self.startup_s:.1f} s until the last worker was ready; steady state: "
                       + (f"{steady[0]:.2f} inputs/s over {steady[1]:.1f} s, {steady[2]:.2f} workers busy on "
                          "average" if steady else "not reached")
                       + f"; CPU: driver {self.driver_cpu_s:.1f} s, decode tasks {self.decode_cpu_s:.1f} s")
            out += [f"  worker {w.line()}" for w in self.worker_usage.values()]
        if self.stage_s:
            out.append("per-stage time (summed over workers): "
                       + ", ".join(f"{k} {v:.2f} s" for k, v in self.stage_s.items()))
        if self.manifest is not None:
            out.append(f"manifest: {self.manifest}")
        if self.interrupted:
            out.append("interrupted: run the same command again to finish (committed shards are kept)")
        if self.failed:
            out.append("failed inputs:")
            out += [f"  {f.path}: {f.reason}" for f in self.failed]
        return out


def _settings_key(plan: JobPlan, fmt: str) -> str:
    settings = plan.item_settings(RayInput("", ""))
    video = plan.item_settings(RayInput("", "", is_video=True))
    text = json.dumps({"settings": settings, "video": video, "format": fmt}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _shards(items: list[RayInput], size: int) -> list[dict[str, Any]]:
    """Fixed shards of ``size`` images in listing order; a video is a shard of its own (one worker does it whole,
    frame after frame, as the local job: tracking and smoothing need the frames in order)."""
    chunks: list[tuple[int, list[RayInput]]] = []
    start = 0
    for k, item in enumerate(items + [None]):
        if item is None or item.is_video or k - start == size:
            if k > start:
                chunks.append((start, items[start:k]))
            start = k
        if item is not None and item.is_video:
            chunks.append((k, [item]))
            start = k + 1
    specs = []
    for k, (start, chunk) in enumerate(chunks):
        digest = hashlib.sha1("\n".join(i.source for i in chunk).encode()).hexdigest()[:10]
        specs.append({"shard": f"{k:06d}-{digest}", "index": start,
                      "inputs": json.dumps([i.to_dict() for i in chunk])})
    return specs


def _committed(parts_dir: Path, shard: str, output_dir: Path):
    """The shard's committed rows, or None when it must be (re)done: no part, an unreadable one, or outputs
    that are gone."""
    import pyarrow.parquet as pq

    path = part_path(parts_dir, shard)
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # a damaged part is redone rather than trusted
        logger.warning("ignoring unreadable part %s (%s); its shard is done again", path, exc)
        return None
    for outputs in table.column("outputs").to_pylist():
        if not all((output_dir / name).is_file() for name in outputs):
            return None
    return table


def _reopen_changed(parts_dir: Path, shard: str, table, fmt: str, paths: Mapping[str, str]) -> bool:
    """If inputs of a committed shard changed since (:func:`~.worker.input_identity`), reopen the shard: with
    ``files``, its unchanged rows are journaled (carried by the worker, not predicted again); the part goes. Returns
    whether the shard was reopened."""
    rows = table.to_pylist()
    changed = [r["input"] for r in rows  # parts of older versions have no identity: redone
               if (r.get("input_bytes", -2), r.get("input_modified_ns", -2)) != input_identity(paths[r["input"]])]
    if not changed:
        return False
    logger.info("shard %s: %d input(s) changed since it was done (%s); doing them again", shard, len(changed),
                ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else ""))
    if fmt == "files":
        for row in rows:
            if row["input"] not in changed and row["status"] == "ok":
                write_journal_entry(parts_dir, shard, row)
    part_path(parts_dir, shard).unlink()
    return True


def _make_predictor(tasks: Sequence[str], predictor) -> Callable[[], Any]:
    if callable(predictor):
        return predictor
    if isinstance(predictor, Mapping):
        from sapiens2.inference.predictor import Predictor

        return functools.partial(Predictor, list(tasks), **dict(predictor))
    raise TypeError("predictor must be a zero-argument factory (called once per worker) or a mapping of "
                    "Predictor keyword arguments")


def _placement(ray, options: RayOptions) -> tuple[int, float, float, int | None]:
    """(workers, GPUs each, CPUs each, torch threads each) for the model actors."""
    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_gpu = options.num_gpus_per_worker if options.num_gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if per_gpu > gpus:
        raise UsageError(f"--num-gpus-per-worker {per_gpu:g}, but the Ray cluster has {gpus:g} GPU(s)")
    workers = options.workers or (max(1, int(gpus // per_gpu)) if per_gpu else 1)
    if per_gpu:
        return workers, per_gpu, 1.0, None
    # CPU workers share the CPUs with the decode tasks: a fraction each, and torch threads to match
    return workers, 0.0, min(1.0, cpus / (workers + 1)), options.threads_per_worker or max(1, int(cpus) // workers)


def predict_ray(inputs: Sequence[str | Path], output: str | Path, tasks: Sequence[str], predictor, *,
                options: OutputOptions | None = None, settings: Mapping[str, Any] | None = None,
                engine: RayOptions | None = None, overwrite: bool = False, max_pixels: int | None = None,
                stop_after_shards: int | None = None, every: int = 1,
                video: VideoOptions | None = None) -> RaySummary:
    """Predict ``tasks`` for ``inputs`` on Ray Data into ``output`` (see the module doc).

    ``predictor``: a zero-argument factory returning a predictor (``predict``/``predict_many``, like
    :class:`~sapiens2.inference.predictor.Predictor`), called once per worker; or a mapping of ``Predictor``
    keyword arguments (``model=``, ``device=``, ``input_size=``, ...). ``settings``: what else decides the outputs
    (models, input size, ...), kept in the completion records as by the local job. ``every`` and ``video``: how
    videos are read and post-processed, as by the local job (each video is one shard). Returns the summary; raises
    :class:`PredictInterrupted` when ``stop_after_shards`` stopped the run."""
    start, cpu = time.perf_counter(), time.process_time()
    started_at = time.time()
    engine = engine or RayOptions()
    engine.check()
    require("pyarrow", extra="ray", needed_by="predict --engine ray")
    plan = JobPlan.make(tasks, output, options, overwrite=overwrite, settings=settings, every=every, video=video)
    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    items, listing_failures = list_predict_inputs(inputs, out, exclude=own_output_filter(out))
    specs = _shards(items, engine.shard_size)
    parts_dir = out / PARTS_DIR / _settings_key(plan, engine.format)
    if overwrite:
        shutil.rmtree(parts_dir, ignore_errors=True)
    reset_commit_budget(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    for folder in (parts_dir, out / PREDICTIONS_DIR):  # leftovers of writes killed midway
        remove_stale_temp_files(folder)
    done_before = {s["shard"]: _committed(parts_dir, s["shard"], out) for s in specs}
    paths = {item.source: item.path for item in items}
    for shard, table in done_before.items():
        if table is not None and _reopen_changed(parts_dir, shard, table, engine.format, paths):
            done_before[shard] = None
    todo = [s for s in specs if done_before[s["shard"]] is None]
    summary = RaySummary(total=len(items) + len(listing_failures), shards=len(specs), shards_run=len(todo),
                         started_at=started_at)
    summary.skipped = sum(t.column("status").to_pylist().count("ok") for t in done_before.values() if t is not None)
    if summary.skipped:
        logger.info("skipping %d input(s) of %d committed shard(s) (use --overwrite to redo them)",
                    summary.skipped, len(specs) - len(todo))
    if todo:
        _run_shards(todo, plan, engine, _make_predictor(plan.tasks, predictor), parts_dir, summary,
                    DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, stop_after_shards)
    reset_commit_budget(parts_dir)
    summary.driver_cpu_s = time.process_time() - cpu
    if summary.interrupted:
        summary.wall_s = time.perf_counter() - start
        raise PredictInterrupted(f"stopped on request after {stop_after_shards} committed shard(s) of "
                                 f"{len(specs)}; run again to finish")
    summary.manifest = _write_manifest(out, specs, parts_dir, listing_failures, len(items), summary)
    summary.wall_s = time.perf_counter() - start
    summary.driver_cpu_s = time.process_time() - cpu
    return summary


def _run_shards(todo, plan: JobPlan, engine: RayOptions, make_predictor, parts_dir: Path, summary: RaySummary,
                max_pixels: int | None, stop_after_shards: int | None) -> None:
    ray = connect_ray(engine.address, engine.num_cpus, engine.progress, extra="ray",
                      needed_by="predict --engine ray")
    workers, gpus, cpus, threads = _placement(ray, engine)
    summary.workers = workers
    logger.info("%d shard(s) on %d worker(s) (%g GPU, %g CPU each)", len(todo), workers, gpus, cpus)
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map(decode_shard, fn_kwargs={"max_pixels": max_pixels, "keep_bytes": engine.format == "webdataset"},
                num_cpus=0.25)
    pool = ray.data.ActorPoolStrategy(min_size=workers, max_size=workers, max_tasks_in_flight_per_actor=2)
    ds = ds.map_batches(ShardPredictor, batch_size=1, batch_format="numpy", compute=pool, num_cpus=cpus or 0.5,
                        num_gpus=gpus, fn_constructor_kwargs=dict(
                            make_predictor=make_predictor, plan=plan, fmt=engine.format,
                            output_dir=str(plan.output_dir), parts_dir=str(parts_dir),
                            commit_budget=stop_after_shards, threads=threads, run=uuid.uuid4().hex,
                            run_started_at=summary.started_at))
    # consumed to its end even when interrupting: a worker that claimed a commit slot may still be writing
    for row in ds.iter_rows():
        if not bool(row["committed"]):
            summary.interrupted = True
            continue
        summary.predicted += int(row["predicted"])
        summary.skipped += int(row["carried"])
        summary.people += int(row["people"])
        summary.decode_cpu_s += float(row["decode_cpu_s"])
        usage = summary.worker_usage.setdefault(str(row["worker"]), WorkerUsage.from_stats(row))
        usage.add(row)
        summary.spans.append(ShardSpan(float(row["began"]), float(row["ended"]), int(row["predicted"])))
        for stage, seconds in json.loads(row["stage_s"]).items():
            summary.stage_s[stage] = summary.stage_s.get(stage, 0.0) + seconds


def _write_manifest(out: Path, specs, parts_dir: Path, listing_failures: list[InputFailure], listed: int,
                    summary: RaySummary) -> Path:
    import pyarrow as pa

    tables = []
    for spec in specs:
        table = _committed(parts_dir, spec["shard"], out)
        if table is None:
            raise Sapiens2Error(f"shard {spec['shard']} has no committed part after the run; run again")
        tables.append(table)
    extra = [{"uid": make_uid(str(f.path)), "index": listed + k, "input": str(f.path), "shard": "",
              "status": "failed", "reason": f.reason, "people": -1, "whole_image_fallback": False, "height": -1,
              "width": -1, "decode_s": 0.0, "model_s": 0.0, "write_s": 0.0, "outputs": [], "input_bytes": -1,
              "input_modified_ns": -1}
             for k, f in enumerate(listing_failures)]
    tables.append(rows_table(extra))
    manifest = pa.concat_tables(tables).select(list(MANIFEST_COLUMNS)).sort_by("index")
    rows = manifest.select(["input", "status", "reason"]).to_pylist()
    summary.failed = [InputFailure(Path(r["input"]), r["reason"]) for r in rows if r["status"] != "ok"]
    summary.done = sum(r["status"] == "ok" for r in rows) - summary.skipped
    return write_table_atomic(manifest, out / MANIFEST)
