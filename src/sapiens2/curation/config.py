"""Every knob of the curation pipeline as nested dataclasses, loadable from YAML (``curate.yaml``).

The numbers the paper leaves out are ours; each default says why in a comment. A YAML file only needs the keys it
changes, e.g.::

    person: {min_box_short_side: 256}
    clip: {model: openai/clip-vit-large-patch14, aesthetic_head: sa_0_4_vit_l_14_linear.pth}
    balance: {clusters: [1000, 100], cap_per_cluster: 2000}
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["QualityConfig", "PersonConfig", "HeadPoseConfig", "TextConfig", "ClipConfig", "DedupConfig",
           "BalanceConfig", "OutputConfig", "RayConfig", "CurateConfig", "load_config", "config_to_dict",
           "config_fingerprint", "CurationConfigError"]

from sapiens2.errors import Sapiens2Error


class CurationConfigError(Sapiens2Error, ValueError):
    """An unknown key or a bad value in the curation configuration."""


@dataclass
class QualityConfig:
    min_short_side: int = 384  # an image smaller than the smallest person we keep cannot hold one
    max_pixels: int = 200_000_000  # decompression-bomb guard: larger images are recorded as corrupt
    min_blur: float = 30.0  # variance of the Laplacian at 512 px long side; sharp photos score > 100
    max_bright_fraction: float = 0.5  # share of pixels at >= 250: over-exposed above it
    max_dark_fraction: float = 0.5  # share of pixels at <= 5: under-exposed above it
    min_contrast: float = 8.0  # grey-level std; flat colour / blank images score ~0
    work_max_side: int = 1024  # images are carried between stages at most this size (boxes map back)


@dataclass
class PersonConfig:
    detector: str = "hog"  # hog (shipped, no download) | onnx (model_path) | annotations (sidecar boxes)
    model_path: str = ""  # the .onnx file for detector=onnx
    score_threshold: float = 0.5  # HOG SVM margin (the shipped detector's practical threshold)
    min_box_short_side: int = 384  # the paper: keep people whose box short side is >= 384 px (original pixels)
    hog_max_side: int = 800


@dataclass
class HeadPoseConfig:
    method: str = "auto"  # auto (keypoints if present, else face cascades) | keypoints | cascade | none
    require_head: bool = True  # drop images where no prominent person shows a head
    min_keypoint_score: float = 0.3  # a face keypoint counts as visible at or above this
    prominent_fraction: float = 0.5  # "prominent" = box area >= this share of the largest box


@dataclass
class TextConfig:
    method: str = "mser"  # mser (OpenCV MSER text-line grouping, CPU) | none; CLIP prompts add clip_text_prob
    max_text_area: float = 0.03  # drop when text-line boxes cover more than this share of the image
    min_chars_per_line: int = 4  # a text line needs this many aligned character-like regions
    work_max_side: int = 768


@dataclass
class ClipConfig:
    model: str = "openai/clip-vit-base-patch32"  # hub name or local folder (transformers CLIPModel + tokenizer)
    device: str = "auto"  # auto = cuda, then mps, then cpu
    dtype: str = "auto"  # auto = float16 on cuda, float32 elsewhere
    batch_size: int = 32
    min_photo_prob: float = 0.5  # zero-shot P(photo of people) over all prompt groups; below -> not_photo
    max_text_prob: float = 1.01  # zero-shot P(text overlay / watermark); above -> text_overlay (off by default)
    aesthetic_head: str = ""  # LAION-style linear / MLP predictor file on the CLIP embedding (optional)
    min_aesthetic: float = float("-inf")  # below -> low_aesthetic (LAION scores are ~1-10; 4.5 is a common cut)
    realism_head: str = ""  # optional second head of the same format (higher = more realistic)
    min_realism: float = float("-inf")
    logit_scale: float = 100.0  # CLIP's trained temperature for zero-shot softmax
    prompts: dict[str, list[str]] = field(default_factory=dict)  # overrides the default prompt groups


@dataclass
class DedupConfig:
    exact: bool = True  # identical bytes (SHA-1)
    phash_max_distance: int = 6  # Hamming distance of 64-bit DCT hashes counted as a near copy (-1: off)
    embedding_threshold: float = 0.95  # cosine similarity at or above which the lower-priority image goes (>1: off)
    embedding_chunk: int = 4096  # rows per similarity block (memory ~ chunk^2 floats)
    within_clusters: int = 0  # >0: SemDeDup-style, compare only inside this many k-means clusters (for scale)


@dataclass
class BalanceConfig:
    clusters: list[int] = field(default_factory=lambda: [64])  # k per level; [k1, k2] = hierarchical (DINOv2)
    cap_per_cluster: int = 0  # keep at most this many per leaf cluster (0 = no cap)
    target_total: int = 0  # >0: balanced hierarchical sampling down to this many images
    iterations: int = 25
    seed: int = 0


@dataclass
class OutputConfig:
    shard_size: int = 1000  # images per tar shard
    jpeg_quality: int = 95  # for inputs that are not JPEG already (JPEG bytes are copied untouched)
    report: bool = True
    report_examples: int = 8  # thumbnails per reason in the contact sheet
    save_embeddings: bool = True


@dataclass
class RayConfig:
    address: str = ""  # "" = RAY_ADDRESS or a local instance started here
    num_cpus: int = 0  # for the local instance (0 = all)
    batch_size: int = 16  # images per map_batches call for the CPU stages
    max_actors: int = 0  # per model stage (0 = as many as resources allow)
    num_gpus_per_actor: float = 1.0  # for the CLIP actors when GPUs exist
    block_size: int = 64  # input items per Ray block


@dataclass
class CurateConfig:
    quality: QualityConfig = field(default_factory=QualityConfig)
    person: PersonConfig = field(default_factory=PersonConfig)
    head: HeadPoseConfig = field(default_factory=HeadPoseConfig)
    text: TextConfig = field(default_factory=TextConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    score_all: bool = False  # run every stage on every image (slower; lets any threshold be changed later)


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise CurationConfigError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CurationConfigError(f"unknown key(s) {unknown} in {where or 'config'}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}".lstrip("."))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise CurationConfigError(f"{where}.{name} must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                kwargs[name] = type(default)(value) if not (isinstance(default, int) and isinstance(value, float)
                                                            and not value.is_integer()) else value
            except (TypeError, ValueError) as exc:
                raise CurationConfigError(f"{where}.{name} must be a number, got {value!r}") from exc
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(source: str | os.PathLike | dict | CurateConfig | None = None) -> CurateConfig:
    """A ``CurateConfig`` from a YAML file, a dict (partial: missing keys keep their defaults) or None."""
    if source is None:
        return CurateConfig()
    if isinstance(source, CurateConfig):
        return source
    if isinstance(source, dict):
        return _build(CurateConfig, source, "")
    import yaml

    path = Path(source)
    if not path.is_file():
        raise CurationConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CurationConfigError(f"{path} is not valid YAML: {exc}") from exc
    return _build(CurateConfig, values, "")


def config_to_dict(config: CurateConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_fingerprint(config: CurateConfig, sections: tuple[str, ...]) -> str:
    """Short hash of some sections: the per-image parts are only reused when the stages that made them match."""
    data = {name: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
            for name, v in ((n, getattr(config, n)) for n in sections)}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
