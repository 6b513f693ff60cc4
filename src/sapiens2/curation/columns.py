"""The per-image columns every stage reads and writes, with their "not measured" defaults, and the conversion
between a Ray Data numpy batch (dict of column arrays) and a list of row dicts.

The first stage creates every column, so all batches of all stages share one schema (Arrow needs that); later
stages only fill values in. Floats default to NaN, counts to -1 ("stage did not run"), strings to "".
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["LISTING_COLUMNS", "SCORE_DEFAULTS", "OBJECT_COLUMNS", "STAGE_ORDER", "new_row", "batch_to_rows",
           "rows_to_batch", "map_rows", "is_dropped"]

LISTING_COLUMNS = ("uid", "source", "path", "member", "offset", "size", "sidecar")

SCORE_DEFAULTS: dict[str, Any] = {
    "error": "", "drop_reason": "",
    "width": -1, "height": -1, "sha1": "", "phash": "",  # phash as 16 hex digits (uint64 does not fit int64 safely)
    "short_side": np.nan, "blur": np.nan, "brightness": np.nan, "bright_fraction": np.nan,
    "dark_fraction": np.nan, "contrast": np.nan, "scale": np.nan, "annotation": "",
    "num_persons": -1, "max_person_short_side": np.nan, "person_score": np.nan, "persons": "[]",
    "head_visible": -1, "head_yaw": np.nan, "head_pitch": np.nan, "head_method": "",
    "text_area": np.nan, "text_lines": -1,
    "clip_photo_prob": np.nan, "clip_text_prob": np.nan, "clip_best_group": "", "aesthetic": np.nan,
    "realism": np.nan,
}
OBJECT_COLUMNS = ("image", "embedding")  # variable-shaped arrays

# Drop reasons in the order the stages run; the first failed check is the one recorded.
STAGE_ORDER = (
    ("read", ("unreadable", "corrupt")),
    ("quality", ("too_small", "flat", "overexposed", "underexposed", "blurry")),
    ("person", ("no_person", "person_too_small")),
    ("head", ("no_head",)),
    ("text", ("text_overlay",)),
    ("clip", ("not_photo", "clip_text", "low_aesthetic", "low_realism")),
    ("dedup", ("duplicate_exact", "duplicate_near", "duplicate_embedding")),
    ("balance", ("balanced_out",)),
)


def new_row(listing: dict[str, Any]) -> dict[str, Any]:
    row = {k: listing[k] for k in LISTING_COLUMNS}
    row.update(SCORE_DEFAULTS)
    row["image"] = np.zeros((1, 1, 3), np.uint8)
    row["embedding"] = np.zeros((0,), np.float32)
    return row


def is_dropped(row: dict[str, Any]) -> bool:
    return bool(row["drop_reason"])


def batch_to_rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    names = list(batch)
    n = len(batch[names[0]]) if names else 0
    rows = []
    for i in range(n):
        row = {}
        for name in names:
            value = batch[name][i]
            row[name] = value.item() if isinstance(value, np.generic) else value
        rows.append(row)
    return rows


def rows_to_batch(rows: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, np.ndarray]:
    names = names or (list(rows[0]) if rows else [])
    batch = {}
    for name in names:
        values = [r[name] for r in rows]
        if name in OBJECT_COLUMNS:
            column = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                column[i] = np.asarray(v)
            batch[name] = column
        elif isinstance(SCORE_DEFAULTS.get(name), float):
            batch[name] = np.asarray(values, np.float64)
        elif isinstance(SCORE_DEFAULTS.get(name), int) or name in ("offset", "size"):
            batch[name] = np.asarray(values, np.int64)
        else:
            batch[name] = np.asarray([str(v) for v in values], dtype=object)
    return batch


def map_rows(batch: dict[str, np.ndarray], fn: Callable[[dict[str, Any]], None]) -> dict[str, np.ndarray]:
    """Apply ``fn`` (which edits a row in place) to every row of a batch."""
    rows = batch_to_rows(batch)
    for row in rows:
        fn(row)
    return rows_to_batch(rows, list(batch))
