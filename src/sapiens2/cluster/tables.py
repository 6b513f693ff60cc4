"""Parquet tables written atomically (temporary name, then rename) and read back without pandas."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sapiens2.io.writers import atomic_path

__all__ = ["read_table_dict", "write_table_atomic"]


def write_table_atomic(table, path: str | Path) -> Path:
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_path(path) as temp:
        pq.write_table(table, temp)
    return path


def read_table_dict(path: str | Path) -> dict[str, list[Any]]:
    """A Parquet file as a dict of column lists."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()
