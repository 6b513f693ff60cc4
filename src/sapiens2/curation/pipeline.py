"""The curation run on Ray Data, one code path for a laptop and a cluster.

Phase 1 (streaming, per image): listing -> ``decode`` (task) -> ``person`` + head pose (actor: detector and face
cascades loaded once) -> ``text`` (task) -> ``clip`` (actor; a GPU each when the cluster has GPUs; ``clip.model:
none`` leaves it out) -> ``write_part`` (task). Every model file is checked on the driver before Ray starts. Ray
Data streams blocks through all stages at once, so the collection never sits in memory and the slowest stage sets
the rate. Inputs already present in a part are skipped: a killed run resumes where it stopped.
Phase 2 (driver, whole collection): exact / near / embedding de-duplication and cluster balancing, then the
manifest. Phase 3: shards written by Ray tasks (reading the sources again), the index, the report.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.errors import Sapiens2Error
from sapiens2.io.writers import write_json

from .config import CurateConfig, config_fingerprint, config_to_dict, load_config
from .global_stage import apply_global_stages
from .manifest import stage_of_reason, write_table_atomic
from .preflight import check_models, clip_enabled
from .runtime import connect_ray, require
from .shards import shard_fingerprint, shard_name, write_index, write_shard
from .sources import list_inputs

__all__ = ["CurationResult", "CurationInterrupted", "curate", "PER_IMAGE_SECTIONS", "build_per_image_dataset"]

log = logging.getLogger(__name__)
PER_IMAGE_SECTIONS = ("quality", "person", "head", "text", "clip", "score_all")
MANIFEST_DROP = ("embedding", "annotation")


class CurationInterrupted(Sapiens2Error, RuntimeError):
    """Raised by ``curate(..., stop_after_batches=k)`` to simulate a crash after exactly k committed batches (tests
    and demos of resuming)."""


@dataclass
class CurationResult:
    output: Path
    manifest: Path
    shards: list[Path]
    total: int
    kept: int
    by_reason: dict[str, int]
    summary: dict[str, Any]


class _PersonAndHead:
    """One CPU actor for the person detector and the head-pose estimator (both load their models once)."""

    def __init__(self, cfg: CurateConfig):
        from .head_pose import HeadPoseStage
        from .person import PersonStage

        self.person = PersonStage(cfg)
        self.head = HeadPoseStage(cfg)

    def __call__(self, batch):
        return self.head(self.person(batch))


def _fingerprint(cfg: CurateConfig) -> str:
    return config_fingerprint(cfg, PER_IMAGE_SECTIONS)


def build_per_image_dataset(ray, items: list[dict], cfg: CurateConfig, parts_dir: Path,
                            commit_budget: int | None = None):
    """The streaming Dataset of phase 1 (lazy; consuming it writes the parts, at most ``commit_budget``)."""
    from .clip_stage import ClipStage
    from .decode import decode_batch
    from .parts import write_part
    from .text_detect import text_batch

    resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    max_actors = cfg.ray.max_actors or max(1, int(cpus))
    bs = max(1, cfg.ray.batch_size)
    # Fractional CPUs so the two CPU actor pools never starve the tasks on a small machine; cores are shared anyway.
    task = dict(batch_size=bs, batch_format="numpy", num_cpus=0.5)
    # actor pools through ``compute`` (``concurrency`` is deprecated since Ray 2.51)
    actor = dict(batch_size=bs, batch_format="numpy", fn_constructor_kwargs={"cfg": cfg},
                 compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max_actors))
    blocks = max(1, math.ceil(len(items) / max(1, cfg.ray.block_size)))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(decode_batch, fn_kwargs={"cfg": cfg}, **task)
    ds = ds.map_batches(_PersonAndHead, num_cpus=0.5, **actor)
    ds = ds.map_batches(text_batch, fn_kwargs={"cfg": cfg}, **task)
    if not clip_enabled(cfg):
        pass  # no embeddings: the global stages skip embedding de-duplication and balancing
    elif gpus > 0:
        gpu_actors = max(1, int(gpus / cfg.ray.num_gpus_per_actor))
        gpu_pool = ray.data.ActorPoolStrategy(min_size=1, max_size=min(max_actors, gpu_actors))
        ds = ds.map_batches(ClipStage, num_gpus=cfg.ray.num_gpus_per_actor, num_cpus=1,
                            **{**actor, "compute": gpu_pool})
    else:
        ds = ds.map_batches(ClipStage, num_cpus=0.5, **actor)
    return ds.map_batches(write_part, fn_kwargs={"parts_dir": str(parts_dir), "commit_budget": commit_budget},
                          **task)


def _run_per_image(ray, items, cfg, parts_dir: Path, stop_after_batches: int | None) -> None:
    from .parts import done_uids, reset_commit_budget

    reset_commit_budget(parts_dir)
    done = done_uids(parts_dir)
    todo = [it for it in items if it["uid"] not in done]
    log.info("%d of %d images already scored (resuming); %d to go", len(items) - len(todo), len(items), len(todo))
    if not todo:
        return
    ds = build_per_image_dataset(ray, todo, cfg, parts_dir, commit_budget=stop_after_batches)
    seen = lost = 0
    # The stream is consumed to its end even when interrupting: a writer that claimed a slot may still be
    # writing its part, and the parts on disk must be exactly the committed ones when this returns.
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        committed = np.asarray(batch["committed"], bool)
        seen += int(committed.sum())
        lost += int((~committed).sum())
    if stop_after_batches is not None:
        reset_commit_budget(parts_dir)
        if lost:
            raise CurationInterrupted(f"stopped on request after {stop_after_batches} committed batch(es) "
                                      f"({seen} images scored, {lost} not)")
    log.info("phase 1 done: %d images scored", seen)


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


_META_SCORES = ("short_side", "blur", "brightness", "bright_fraction", "dark_fraction", "contrast",
                "num_persons", "max_person_short_side", "person_score", "head_visible", "head_yaw", "head_pitch",
                "text_area", "text_lines", "clip_photo_prob", "clip_text_prob", "aesthetic", "realism")


def _sample_meta(m: dict[str, list], i: int) -> dict[str, Any]:
    import json

    return {"key": m["uid"][i], "source": m["source"][i], "width": m["width"][i], "height": m["height"][i],
            "persons": json.loads(m["persons"][i]), "cluster": m["cluster_path"][i],
            "scores": {k: _json_value(m[k][i]) for k in _META_SCORES}}


def _write_shards(ray, m: dict[str, list], cfg: CurateConfig, shard_dir: Path) -> list[Path]:
    import json

    kept = sorted((i for i, r in enumerate(m["drop_reason"]) if not r), key=lambda i: m["uid"][i])
    size = max(1, cfg.output.shard_size)
    specs = []
    for s, start in enumerate(range(0, len(kept), size)):
        samples = [{"row": {k: m[k][i] for k in ("source", "path", "offset", "size")}, "meta": _sample_meta(m, i)}
                   for i in kept[start:start + size]]
        # samples travel as JSON text: Ray Data would turn nested lists into arrays
        specs.append({"name": shard_name(s), "samples": json.dumps(samples),
                      "fingerprint": shard_fingerprint(samples)})
    previous = {}
    index_path = shard_dir / "index.json"
    if index_path.is_file():
        previous = {e["name"]: e for e in json.loads(index_path.read_text(encoding="utf-8")).get("shards", [])}
    entries, todo = [], []
    for spec in specs:
        old = previous.get(spec["name"])
        if old and old.get("fingerprint") == spec["fingerprint"] and (shard_dir / spec["name"]).is_file():
            entries.append(old)
        else:
            todo.append(spec)
    log.info("%d shard(s): %d unchanged, %d to write", len(specs), len(entries), len(todo))
    if todo:
        def write_batch(batch, quality, folder):
            out = {"name": [], "count": [], "fingerprint": []}
            for name, samples, fp in zip(batch["name"], batch["samples"], batch["fingerprint"]):
                out["name"].append(name)
                out["count"].append(write_shard(Path(folder) / name, json.loads(samples), quality))
                out["fingerprint"].append(fp)
            return {k: np.asarray(v, dtype=object if k != "count" else np.int64) for k, v in out.items()}

        ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
            write_batch, fn_kwargs={"quality": cfg.output.jpeg_quality, "folder": str(shard_dir)}, batch_size=1,
            batch_format="numpy", num_cpus=0.5)
        for row in ds.iter_rows():
            entries.append({"name": str(row["name"]), "count": int(row["count"]),
                            "fingerprint": str(row["fingerprint"])})
    wanted = {spec["name"] for spec in specs}
    for stale in shard_dir.glob("shard-*.tar"):
        if stale.name not in wanted:
            stale.unlink()
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_index(shard_dir, entries)
    return [shard_dir / spec["name"] for spec in specs]


def curate(inputs, output: str | Path, config=None, *, address: str = "", progress: bool = False,
           stop_after_batches: int | None = None) -> CurationResult:
    """Curate ``inputs`` (files, folders, .txt lists, .tar shards, URIs) into ``output``.

    Writes ``output/shards/`` (tar shards + index.json), ``output/manifest.parquet`` (every input),
    ``output/embeddings.parquet``, ``output/report/`` and ``output/parts/`` (per-image results, for resuming)."""
    cfg = load_config(config)
    check_models(cfg)  # before Ray starts: a missing model is one clear line, not a wall of actor tracebacks
    pa = require("pyarrow")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config_to_dict(cfg), allow_nan=True)
    ray = connect_ray(address or cfg.ray.address, cfg.ray.num_cpus, progress)
    items = list_inputs(inputs)
    parts_dir = out / "parts" / _fingerprint(cfg)
    _run_per_image(ray, items, cfg, parts_dir, stop_after_batches)

    from .parts import read_parts

    uids = {it["uid"] for it in items}
    table = read_parts(parts_dir, uids)
    if table is None or table.num_rows != len(items):
        raise Sapiens2Error(f"phase 1 left {len(items) - (0 if table is None else table.num_rows)} images unscored")
    table = table.sort_by("uid")
    cols = table.to_pydict()
    embeddings = [np.asarray(e, np.float32) for e in cols["embedding"]]
    decided = apply_global_stages(cols, embeddings, cfg)
    m = {k: v for k, v in cols.items() if k not in MANIFEST_DROP}
    m.update(decided)
    m["drop_stage"] = [stage_of_reason(r) for r in m["drop_reason"]]
    m["kept"] = [not r for r in m["drop_reason"]]
    kept_sorted = [i for i in range(len(m["uid"])) if m["kept"][i]]
    size = max(1, cfg.output.shard_size)
    m["shard"] = [""] * len(m["uid"])
    for rank, i in enumerate(kept_sorted):
        m["shard"][i] = shard_name(rank // size)
    shards = _write_shards(ray, m, cfg, out / "shards")
    manifest_path = write_table_atomic(pa.table(m), out / "manifest.parquet")
    if cfg.output.save_embeddings:
        has = [i for i, e in enumerate(embeddings) if len(e)]
        emb_table = pa.table({"uid": [cols["uid"][i] for i in has],
                              "embedding": [embeddings[i].tolist() for i in has]})
        write_table_atomic(emb_table, out / "embeddings.parquet")
    summary = {}
    if cfg.output.report:
        from .report import write_report

        summary = write_report(out / "report", m, cfg)
    from collections import Counter

    by_reason = dict(sorted(Counter(r for r in m["drop_reason"] if r).items()))
    log.info("curated %d images: %d kept, dropped %s", len(items), sum(m["kept"]), by_reason)
    return CurationResult(out, manifest_path, shards, len(items), int(sum(m["kept"])), by_reason, summary)
