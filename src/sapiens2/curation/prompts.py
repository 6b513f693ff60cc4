"""Zero-shot prompt groups for CLIP and the probabilities the pipeline keeps.

Two questions, each a softmax over all prompts of its groups (temperature = CLIP's logit scale, 100), summed per
group:
- kind: is it a photo of people, or a drawing, render, screenshot, meme, collage, or a photo of something else?
  -> ``clip_photo_prob`` = P(person_photo).
- text: is the photo clean or does it carry a text overlay / watermark? -> ``clip_text_prob`` = P(text_overlay).
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_PROMPTS", "QUESTIONS", "merged_prompts", "group_probabilities"]

DEFAULT_PROMPTS: dict[str, list[str]] = {
    "person_photo": ["a photo of a person", "a photo of people", "a candid photo of a man or a woman",
                     "a photograph of a human body"],
    "drawing": ["a drawing", "a painting", "an illustration", "a cartoon", "an anime picture", "a sketch"],
    "render": ["a 3d render", "a video game screenshot of a character", "a cgi image", "a mannequin"],
    "screenshot": ["a screenshot of a website", "a screenshot of an app", "a scanned document"],
    "meme": ["a meme with text", "a comic strip"],
    "collage": ["a collage of several photos", "a grid of images"],
    "other_photo": ["a photo of an object", "a photo of a landscape", "a photo of an animal", "a photo of food"],
    "clean": ["a photo", "a clean photograph"],
    "text_overlay": ["a photo with a watermark", "a photo with text overlay", "an image with a caption",
                     "a stock photo with a watermark"],
}

QUESTIONS: dict[str, tuple[str, list[str]]] = {  # question -> (positive group, all its groups)
    "kind": ("person_photo", ["person_photo", "drawing", "render", "screenshot", "meme", "collage", "other_photo"]),
    "text": ("text_overlay", ["clean", "text_overlay"]),
}


def merged_prompts(overrides: dict[str, list[str]] | None) -> dict[str, list[str]]:
    prompts = {k: list(v) for k, v in DEFAULT_PROMPTS.items()}
    for group, texts in (overrides or {}).items():
        if group not in prompts:
            raise ValueError(f"unknown prompt group {group!r}; groups: {sorted(prompts)}")
        if not texts:
            raise ValueError(f"prompt group {group!r} needs at least one prompt")
        prompts[group] = [str(t) for t in texts]
    return prompts


def group_probabilities(similarity: np.ndarray, prompt_groups: list[str], groups: list[str],
                        logit_scale: float) -> np.ndarray:
    """(N, P) cosine similarities to all prompts -> (N, len(groups)) probabilities of the given groups.

    The softmax runs over the prompts of ``groups`` only (one question)."""
    cols = [i for i, g in enumerate(prompt_groups) if g in groups]
    logits = logit_scale * similarity[:, cols].astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    sub = [prompt_groups[i] for i in cols]
    return np.stack([p[:, [k for k, g in enumerate(sub) if g == group]].sum(axis=1) for group in groups], axis=1)
