"""Per-person appearance: skin tone, hair, clothing regions and accessories, as colours and coverage fractions."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SKIN_LIGHT = np.array([0.96, 0.80, 0.69])
_SKIN_DARK = np.array([0.30, 0.19, 0.12])
_HAIR = np.array([[0.05, 0.04, 0.04], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.75, 0.60, 0.38],
                  [0.55, 0.22, 0.10], [0.62, 0.62, 0.62]])
_HAIR_P = [0.35, 0.25, 0.15, 0.1, 0.05, 0.1]


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.2, 0.9),
                   val: tuple[float, float] = (0.15, 0.95)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0


@dataclass
class Outfit:
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str            # "bald", "short" or "long"
    hat: np.ndarray | None     # Apparel colour, None = no hat
    top: np.ndarray | None     # Upper_Clothing colour, None = bare torso
    top2: np.ndarray
    top_pattern: str           # "plain", "stripes", "checks"
    sleeve: float              # fraction of the upper arm covered; > 1 continues down the forearm (2 = to the wrist)
    long_top: bool             # the top also covers the upper pelvis
    bottom: np.ndarray         # Lower_Clothing colour
    bottom2: np.ndarray
    bottom_pattern: str
    leg_cover: float           # fraction of the thigh covered; > 1 continues down the shin
    socks: np.ndarray | None
    sock_top: float            # fraction along the shin where socks start
    shoes: np.ndarray | None
    glasses: np.ndarray | None  # Eyeglass frame colour
    lips: np.ndarray
    mouth_open: float          # metres between the inner lip contours (0 = closed)
    gaze: np.ndarray           # iris offset in metres (x, y)
    iris: np.ndarray


def sample_outfit(rng: np.random.Generator, female: bool) -> Outfit:
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.beta(1.2, 1.5)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, size=3), 0, 1)
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] * rng.uniform(0.85, 1.15)
    if female:
        style = str(rng.choice(["short", "long"], p=[0.3, 0.7]))
    else:
        style = str(rng.choice(["bald", "short", "long"], p=[0.15, 0.75, 0.1]))
    bare = (not female) and rng.random() < 0.08
    sleeve = float(rng.choice([0.0, 0.45, 0.8, 1.6, 1.85], p=[0.15, 0.35, 0.1, 0.2, 0.2]))
    if female and rng.random() < 0.2:
        leg_cover = float(rng.uniform(0.3, 0.6))          # shorts / short skirt
    else:
        leg_cover = float(rng.choice([rng.uniform(0.45, 0.9), rng.uniform(1.6, 1.88)], p=[0.25, 0.75]))
    socks_on = rng.random() < 0.6
    shoes_on = rng.random() < 0.85
    return Outfit(
        skin=skin,
        hair=np.clip(hair, 0, 1),
        hair_style=style,
        hat=_random_colour(rng) if rng.random() < 0.12 else None,
        top=None if bare else _random_colour(rng),
        top2=_random_colour(rng),
        top_pattern=str(rng.choice(["plain", "stripes", "checks"], p=[0.6, 0.25, 0.15])),
        sleeve=sleeve,
        long_top=bool(rng.random() < 0.5),
        bottom=_random_colour(rng, sat=(0.1, 0.7), val=(0.1, 0.7)),
        bottom2=_random_colour(rng),
        bottom_pattern=str(rng.choice(["plain", "stripes", "checks"], p=[0.8, 0.1, 0.1])),
        leg_cover=leg_cover,
        socks=_random_colour(rng) if socks_on else None,
        sock_top=float(rng.uniform(0.7, 0.85)),
        shoes=_random_colour(rng, val=(0.1, 0.9)) if shoes_on else None,
        glasses=_random_colour(rng, val=(0.0, 0.5)) if rng.random() < 0.25 else None,
        lips=np.clip(skin * np.array([0.95, 0.62, 0.62]) + rng.uniform(0, 0.15, 3) * [1, 0, 0.3], 0, 1),
        mouth_open=float(rng.uniform(0.003, 0.012)) if rng.random() < 0.35 else 0.0,
        gaze=rng.normal(0, 0.0015, size=2),
        iris=np.array([0.25, 0.15, 0.08]) * rng.uniform(0.5, 1.8),
    )
