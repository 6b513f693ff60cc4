"""The run's summary: counts surviving each stage (``summary.json``), score histograms (``hist_<score>.png``) and
an HTML contact sheet (``index.html``) with kept examples and dropped examples per reason."""
from __future__ import annotations

import html
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io.images import decode_image
from sapiens2.io.writers import write_bytes, write_image, write_json

from .columns import STAGE_ORDER
from .config import CurateConfig
from .decode import shrink
from .plots import histogram_image
from .sources import read_item_bytes

__all__ = ["stage_funnel", "write_report", "HISTOGRAM_SCORES"]

log = logging.getLogger(__name__)

HISTOGRAM_SCORES = ("blur", "brightness", "contrast", "max_person_short_side", "head_yaw", "head_pitch",
                    "text_area", "clip_photo_prob", "clip_text_prob", "aesthetic", "realism", "duplicate_score")


def stage_funnel(reasons: list[str]) -> list[dict[str, Any]]:
    """Per stage: images entering, dropped (by reason), surviving."""
    counts = Counter(reasons)
    remaining = len(reasons)
    funnel = []
    for stage, stage_reasons in STAGE_ORDER:
        dropped = {r: counts.get(r, 0) for r in stage_reasons if counts.get(r, 0)}
        total = sum(dropped.values())
        funnel.append({"stage": stage, "in": remaining, "dropped": total, "by_reason": dropped,
                       "out": remaining - total})
        remaining -= total
    return funnel


def _thresholds(cfg: CurateConfig) -> dict[str, list[float]]:
    return {"blur": [cfg.quality.min_blur], "contrast": [cfg.quality.min_contrast],
            "max_person_short_side": [cfg.person.min_box_short_side], "text_area": [cfg.text.max_text_area],
            "clip_photo_prob": [cfg.clip.min_photo_prob], "clip_text_prob": [cfg.clip.max_text_prob],
            "aesthetic": [cfg.clip.min_aesthetic], "realism": [cfg.clip.min_realism]}


def _thumbnail(row: dict[str, Any], size: int = 160) -> bytes | None:
    from sapiens2.io.writers import encode_image

    try:
        rgb = decode_image(read_item_bytes(row), name=str(row["source"])).rgb
    except (OSError, ValueError):
        return None
    return encode_image(shrink(rgb, size)[0], ".jpg", jpeg_quality=85)


def write_report(out_dir: str | Path, manifest: dict[str, list[Any]], cfg: CurateConfig) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reasons = [r or "" for r in manifest["drop_reason"]]
    kept = np.asarray([not r for r in reasons])
    summary = {"total": len(reasons), "kept": int(kept.sum()), "funnel": stage_funnel(reasons),
               "by_reason": dict(sorted(Counter(r for r in reasons if r).items()))}
    plots = []
    thresholds = _thresholds(cfg)
    for score in HISTOGRAM_SCORES:
        values = np.asarray([np.nan if v is None else v for v in manifest[score]], np.float64)
        if not np.isfinite(values).any():
            continue
        name = f"hist_{score}.png"
        write_image(out / name, histogram_image(score, values[kept], values[~kept], thresholds=thresholds.get(score)))
        plots.append(name)
    summary["plots"] = plots
    write_json(out / "summary.json", summary)

    thumbs = out / "thumbs"
    sections = []
    groups = [("kept", [i for i, r in enumerate(reasons) if not r])]
    groups += [(r, [i for i, x in enumerate(reasons) if x == r]) for r in summary["by_reason"]]
    for title, indices in groups:
        cells = []
        for i in indices[:cfg.output.report_examples]:
            row = {k: manifest[k][i] for k in ("source", "path", "offset", "size")}
            data = _thumbnail(row)
            caption = html.escape(f"{Path(str(manifest['source'][i])).name}")
            error = manifest["error"][i]
            if data is not None:
                write_bytes(thumbs / f"{manifest['uid'][i]}.jpg", data)
                img = f'<img src="thumbs/{manifest["uid"][i]}.jpg">'
            else:
                img = f'<div class="err">{html.escape(str(error) or "unreadable")}</div>'
            cells.append(f'<figure>{img}<figcaption>{caption}</figcaption></figure>')
        sections.append(f"<h2>{html.escape(title)} ({len(indices)})</h2><div class=row>{''.join(cells)}</div>")
    funnel_rows = "".join(
        f"<tr><td>{f['stage']}</td><td>{f['in']}</td><td>{f['dropped']}</td><td>{f['out']}</td>"
        f"<td>{html.escape(', '.join(f'{k}: {v}' for k, v in f['by_reason'].items()))}</td></tr>"
        for f in summary["funnel"])
    page = ("<!doctype html><meta charset=utf-8><title>sapiens2 curation report</title><style>"
            "body{font-family:sans-serif}figure{display:inline-block;margin:4px;width:170px}"
            "img{max-width:160px;max-height:160px}figcaption{font-size:10px;word-break:break-all}"
            ".err{width:160px;height:60px;background:#fdd;font-size:10px}td,th{padding:2px 8px}</style>"
            f"<h1>Curation report: {summary['kept']} of {summary['total']} kept</h1>"
            "<table><tr><th>stage</th><th>in</th><th>dropped</th><th>out</th><th>reasons</th></tr>"
            f"{funnel_rows}</table>" + "".join(f'<img src="{p}">' for p in plots) + "".join(sections))
    write_bytes(out / "index.html", page.encode("utf-8"))
    log.info("report written to %s", out)
    return summary
