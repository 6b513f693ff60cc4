"""Render metric dicts as a plain-text table and save them as JSON (NaN written as null), each metric's unit named.

Convention: every rate is a percentage -- seg mIoU/mAcc/mDice/aAcc and per-class IoU/Acc/Dice, pose AP/AR and
PCK, the ``pct_within_*`` and ``delta*_pct`` shares -- and :func:`metric_units` says what each key is in, for the
printed table and the ``units`` map of the saved JSON."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..io.writers import atomic_path


def to_jsonable(value: Any) -> Any:
    """NumPy scalars/arrays to Python, NaN/inf to None (strict JSON), mappings and sequences recursively."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_PERCENT_NAMES = {"mIoU", "mAcc", "mDice", "aAcc", "IoU", "Acc", "Dice",
                  "AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L"}


def metric_unit(key: str) -> str:
    """The unit of one metric key: "%", "deg", "m", "dB", "count", "box side" or "" (a plain ratio/value)."""
    grouped = any(key == n or key.endswith("_" + n) for n in _PERCENT_NAMES)  # face_AP50, body_AR_M, ...
    if grouped or key.startswith(("PCK@", "pct_")) or "_pct_" in key or key.endswith("_pct"):
        return "%"
    if key.startswith("num_"):
        return "count"
    if key.endswith("_deg"):
        return "deg"
    if key.endswith("_m"):
        return "m"
    if key == "psnr":
        return "dB"
    if key == "mean_error_box":
        return "box side"
    return ""


def metric_units(metrics: Mapping[str, Any]) -> dict[str, str]:
    """{key: unit} for the scalar metrics and the inner keys of nested tables (e.g. seg ``per_class`` IoU)."""
    units: dict[str, str] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for inner in value.values():
                if isinstance(inner, Mapping):
                    units.update({str(k): metric_unit(str(k)) for k in inner})
        else:
            units[str(key)] = metric_unit(str(key))
    return {k: v for k, v in units.items() if v}


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    render = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in  # noqa: E731
                                         enumerate(zip(r, widths))) + " |"
    return "\n".join([line, render(header), line, *map(render, rows), line])


def format_table(metrics: Mapping[str, Any], title: str | None = None, digits: int = 4) -> str:
    """Scalars as a two-column ``metric | value`` table; each nested mapping of mappings (e.g. seg ``per_class``)
    as its own table with one row per item and one column per inner key."""
    scalars = [[str(k), _fmt(v, digits), metric_unit(str(k))] for k, v in metrics.items()
               if not isinstance(v, Mapping)]
    parts = []
    if title:
        parts.append(title)
    if scalars:
        parts.append(_grid(["metric", "value", "unit"], scalars))
    for key, nested in metrics.items():
        if not isinstance(nested, Mapping) or not nested:
            continue
        rows = list(nested.items())
        if all(isinstance(v, Mapping) for _, v in rows):
            columns = list(dict.fromkeys(c for _, v in rows for c in v))
            labels = [f"{c} ({metric_unit(str(c))})" if metric_unit(str(c)) else str(c) for c in columns]
            parts.append(_grid([str(key), *labels], [[str(n), *(_fmt(v.get(c), digits) for c in columns)]
                                                      for n, v in rows]))
        else:
            parts.append(_grid([str(key), "value"], [[str(n), _fmt(v, digits)] for n, v in rows]))
    return "\n".join(parts)


def save_json(metrics: Mapping[str, Any], path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``{**extra, "metrics": metrics, "units": {key: unit}}`` as indented JSON, atomically (temporary
    file, then rename)."""
    path = Path(path)
    payload = to_jsonable({**extra, "metrics": metrics, "units": metric_units(metrics)})
    with atomic_path(path) as temp, open(temp, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
        f.write("\n")
    return path
