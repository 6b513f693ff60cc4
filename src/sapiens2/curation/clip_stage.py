"""Stage 5 (actor, GPU when there is one): CLIP embeddings, zero-shot kind/text probabilities, aesthetic and realism
heads. The embedding is kept for the global de-duplication and balancing. Drops: ``not_photo``
(clip_photo_prob < min_photo_prob), ``clip_text`` (clip_text_prob > max_text_prob), ``low_aesthetic``,
``low_realism``."""
from __future__ import annotations

from typing import Any

import numpy as np

from .aesthetic import load_linear_head
from .clip_model import ClipEncoder
from .columns import batch_to_rows, is_dropped, rows_to_batch
from .config import CurateConfig
from .prompts import QUESTIONS, group_probabilities, merged_prompts

__all__ = ["ClipStage", "clip_reason"]


def clip_reason(row: dict[str, Any], cfg: CurateConfig) -> str:
    c = cfg.clip
    if row["clip_photo_prob"] < c.min_photo_prob:
        return "not_photo"
    if row["clip_text_prob"] > c.max_text_prob:
        return "clip_text"
    if not np.isnan(row["aesthetic"]) and row["aesthetic"] < c.min_aesthetic:
        return "low_aesthetic"
    if not np.isnan(row["realism"]) and row["realism"] < c.min_realism:
        return "low_realism"
    return ""


class ClipStage:
    def __init__(self, cfg: CurateConfig):
        self.cfg = cfg
        self.encoder = ClipEncoder(cfg.clip.model, cfg.clip.device, cfg.clip.dtype)
        prompts = merged_prompts(cfg.clip.prompts)
        self.prompt_groups = [g for g, texts in prompts.items() for _ in texts]
        self.text_emb = self.encoder.encode_texts([t for texts in prompts.values() for t in texts])
        self.aesthetic = load_linear_head(cfg.clip.aesthetic_head) if cfg.clip.aesthetic_head else None
        self.realism = load_linear_head(cfg.clip.realism_head) if cfg.clip.realism_head else None

    def _score(self, rows: list[dict[str, Any]]) -> None:
        emb = self.encoder.encode_images([np.ascontiguousarray(r["image"]) for r in rows])
        sim = emb @ self.text_emb.T
        results = {}
        for question, (positive, groups) in QUESTIONS.items():
            probs = group_probabilities(sim, self.prompt_groups, groups, self.cfg.clip.logit_scale)
            results[question] = (probs, groups, positive)
        kind_p, kind_groups, _ = results["kind"]
        aesthetic = self.aesthetic(emb) if self.aesthetic is not None else np.full(len(rows), np.nan)
        realism = self.realism(emb) if self.realism is not None else np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            row["embedding"] = emb[i].astype(np.float32)
            row["clip_photo_prob"] = float(kind_p[i, kind_groups.index("person_photo")])
            text_p, text_groups, _ = results["text"]
            row["clip_text_prob"] = float(text_p[i, text_groups.index("text_overlay")])
            row["clip_best_group"] = kind_groups[int(kind_p[i].argmax())]
            row["aesthetic"], row["realism"] = float(aesthetic[i]), float(realism[i])
            if not is_dropped(row):
                row["drop_reason"] = clip_reason(row, self.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        todo = [r for r in rows if r["width"] > 0 and (not is_dropped(r) or self.cfg.score_all)]
        step = max(1, self.cfg.clip.batch_size)
        for start in range(0, len(todo), step):
            self._score(todo[start:start + step])
        return rows_to_batch(rows, list(batch))
