"""Per-image results written as they stream out of the last stage: one Parquet "part" per batch, atomically
(temporary name, then rename), so a crash leaves only whole parts. A restarted run skips every uid already in a part
(this is the resume) and the final manifest is assembled from all parts, sorted by uid, so batch boundaries and
worker counts do not change it."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from sapiens2.cluster.commits import claim_commit, reset_commit_budget
from sapiens2.io.writers import atomic_path

from .columns import LISTING_COLUMNS, SCORE_DEFAULTS

__all__ = ["write_part", "batch_to_table", "read_parts", "done_uids", "claim_commit", "reset_commit_budget"]

log = logging.getLogger(__name__)


def _pa():
    from .runtime import require

    return require("pyarrow")


def batch_to_table(batch: dict[str, np.ndarray]):
    """A stage batch (without the image) -> pyarrow Table; the embedding becomes list<float32>."""
    pa = _pa()
    columns = {}
    for name in (*LISTING_COLUMNS, *SCORE_DEFAULTS):
        values = batch[name]
        if isinstance(SCORE_DEFAULTS.get(name), float):
            columns[name] = pa.array(np.asarray(values, np.float64))
        elif isinstance(SCORE_DEFAULTS.get(name), int) or name in ("offset", "size"):
            columns[name] = pa.array(np.asarray(values, np.int64))
        else:
            columns[name] = pa.array([str(v) for v in values], pa.string())
    embs = [np.asarray(e, np.float32).reshape(-1) for e in batch["embedding"]]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in embs])]).astype(np.int32)
    flat = np.concatenate(embs) if embs else np.zeros(0, np.float32)
    columns["embedding"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()))
    return pa.table(columns)


def _result(batch: dict[str, np.ndarray], committed: bool) -> dict[str, np.ndarray]:
    return {"uid": np.asarray(batch["uid"], dtype=object),
            "drop_reason": np.asarray(batch["drop_reason"], dtype=object),
            "committed": np.full(len(batch["uid"]), committed, dtype=bool)}


def write_part(batch: dict[str, np.ndarray], parts_dir: str,
               commit_budget: int | None = None) -> dict[str, np.ndarray]:
    """Ray Data task: write the batch as a part; pass on only uid, drop_reason (for progress) and whether the part
    was committed. ``commit_budget`` (tests and demos of resuming) commits only that many parts in all."""
    import pyarrow.parquet as pq

    folder = Path(parts_dir)
    if commit_budget is not None and not claim_commit(folder, commit_budget):
        return _result(batch, False)  # as if the process had died before this write
    table = batch_to_table(batch)
    uids = sorted(str(u) for u in batch["uid"])
    name = "part-" + hashlib.sha1("\n".join(uids).encode()).hexdigest()[:20] + ".parquet"
    with atomic_path(folder / name) as temp:
        pq.write_table(table, temp)
    return _result(batch, True)


def read_parts(parts_dir: str | Path, uids: set[str] | None = None):
    """All parts as one Table (one row per uid: the first part in name order wins), optionally restricted."""
    pa = _pa()
    import pyarrow.parquet as pq

    files = sorted(Path(parts_dir).glob("part-*.parquet")) if Path(parts_dir).is_dir() else []
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except Exception as exc:  # a damaged part is re-done rather than trusted
            log.warning("ignoring unreadable part %s (%s); its images will be processed again", f, exc)
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    uid = table.column("uid").to_pylist()
    seen, keep = set(), []
    for i, u in enumerate(uid):
        if u not in seen and (uids is None or u in uids):
            seen.add(u)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def done_uids(parts_dir: str | Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    if not Path(parts_dir).is_dir():
        return done
    for f in sorted(Path(parts_dir).glob("part-*.parquet")):
        try:
            done.update(pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
        except Exception:
            continue
    return done
