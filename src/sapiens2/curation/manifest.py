"""The Parquet manifest: one row per input (kept or not) with every stage's scores, the drop reason and the stage
that dropped it, duplicates' partners, clusters and the shard of kept images. Sorted by uid; written atomically.
Embeddings of the images that reached the CLIP stage go to ``embeddings.parquet`` (uid, embedding) so
de-duplication and balancing can be re-run without the models."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sapiens2.cluster.tables import write_table_atomic

from .columns import STAGE_ORDER
from .runtime import require

__all__ = ["stage_of_reason", "write_table_atomic", "read_manifest"]

_REASON_STAGE = {reason: stage for stage, reasons in STAGE_ORDER for reason in reasons}


def stage_of_reason(reason: str) -> str:
    return _REASON_STAGE.get(reason, "") if reason else ""


def read_manifest(path: str | Path) -> dict[str, list[Any]]:
    """The manifest as a dict of column lists (no pandas needed)."""
    require("pyarrow")
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()
