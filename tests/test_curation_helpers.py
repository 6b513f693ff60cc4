"""Builders shared by the curation tests (no tests here): a tiny random CLIP folder, a LAION-style head file, and
a generated collection of synthetic humans plus negatives, each named after the reason it must be dropped for."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np

POSITIVE_INDICES = (0, 1, 2, 3)  # synthetic samples (seed 0, 512x384, 1 person) used as positives
TAR_INDEX = 6  # one more positive, delivered inside a tar shard
LIST_INDEX = 7  # one more positive, delivered through a .txt list


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIPModel (vision 64 px, patch 16) and a character-level CLIPTokenizer, via save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


def write_linear_head(path: Path, dim: int = 16, bias: float = 5.0, seed: int = 0) -> Path:
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.save({"weight": torch.randn(1, dim, generator=g), "bias": torch.tensor([bias])}, path)
    return path


def _xyxy(sample) -> list[list[float]]:
    return [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in sample["boxes"]]


def _annotation(boxes, keypoints=None) -> dict:
    return {"boxes": boxes, "keypoints": [] if keypoints is None else np.asarray(keypoints).tolist()}


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.integers(0, 255, (h // 32 + 1, w // 32 + 1, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):  # some shapes for edges (sharp, not a person)
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 80)), y + int(rng.integers(10, 80))), c, -1)
    return img


def build_collection(root: Path) -> dict[str, str]:
    """Write the collection under ``root``; returns {file name: expected drop reason ("" = kept)}."""
    from sapiens2.data.synth import generate_sample

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    rng = np.random.default_rng(0)

    def save(name, rgb, annotation=None, reason="", quality=95):
        (images / name).write_bytes(_jpeg(rgb, quality))
        if annotation is not None:
            (images / name).with_suffix(".json").write_text(json.dumps(annotation))
        expected[name] = reason

    samples = {i: generate_sample(0, i, 512, 384, 1) for i in (*POSITIVE_INDICES, TAR_INDEX, LIST_INDEX)}
    for i in POSITIVE_INDICES:
        s = samples[i]
        save(f"pos{i}.jpg", s["image"], _annotation(_xyxy(s), s["keypoints"]))
    base = samples[POSITIVE_INDICES[0]]
    ann = _annotation(_xyxy(base), base["keypoints"])

    (images / "pos0_copy.jpg").write_bytes((images / "pos0.jpg").read_bytes())  # same size: the name decides
    (images / "pos0_copy.json").write_text(json.dumps(ann))
    expected["pos0_copy.jpg"] = "duplicate_exact"

    s1 = samples[POSITIVE_INDICES[1]]
    near = cv2.resize(s1["image"], (288, 384), interpolation=cv2.INTER_AREA)
    kp1 = s1["keypoints"].copy()
    kp1[..., :2] *= 0.75
    save("copy_near.jpg", near, _annotation([[v * 0.75 for v in b] for b in _xyxy(s1)], kp1), "duplicate_near", 70)

    s2 = samples[POSITIVE_INDICES[2]]  # an 80 % centre crop, smaller: phash differs (~20 bits), CLIP does not
    crop = cv2.resize(s2["image"][51:461, 38:346], (300, 400), interpolation=cv2.INTER_AREA)
    kp = s2["keypoints"].copy()
    kp[..., 0], kp[..., 1] = (kp[..., 0] - 38) * 300 / 308, (kp[..., 1] - 51) * 400 / 410
    box = [[(b[0] - 38) * 300 / 308, (b[1] - 51) * 400 / 410, (b[2] - 38) * 300 / 308, (b[3] - 51) * 400 / 410]
           for b in _xyxy(s2)]
    save("copy_crop.jpg", crop, _annotation(box, kp), "duplicate_embedding")

    save("blurry.jpg", cv2.GaussianBlur(base["image"], (0, 0), 8), ann, "blurry")
    over = base["image"].copy()
    over[180:] = 255
    save("overexposed.jpg", over, ann, "overexposed")
    under = base["image"].copy()
    under[180:] = 0
    save("underexposed.jpg", under, ann, "underexposed")
    save("flat.jpg", np.full((512, 384, 3), 120, np.uint8), ann, "flat")
    save("small.jpg", cv2.resize(base["image"], (150, 200)), _annotation([[10, 10, 100, 190]]), "too_small")
    save("no_person.jpg", _texture(rng, 512, 384), None, "no_person")

    canvas = _texture(rng, 768, 1024)  # a whole person, 1/4 size, pasted into a large scene
    tiny = cv2.resize(samples[POSITIVE_INDICES[2]]["image"], (96, 128), interpolation=cv2.INTER_AREA)
    canvas[300:428, 500:596] = tiny
    tiny_boxes = [[500 + v[0] / 4, 300 + v[1] / 4, 500 + v[2] / 4, 300 + v[3] / 4]
                  for v in _xyxy(samples[POSITIVE_INDICES[2]])]
    save("tiny_person.jpg", canvas, _annotation(tiny_boxes), "person_too_small")

    text = samples[POSITIVE_INDICES[3]]["image"].copy()
    cv2.putText(text, "SALE 50% OFF", (10, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (255, 255, 255), 3)
    cv2.putText(text, "www.example.com", (20, 480), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (250, 250, 0), 2)
    s3 = samples[POSITIVE_INDICES[3]]
    save("text_overlay.jpg", text, _annotation(_xyxy(s3), s3["keypoints"]), "text_overlay")

    (images / "corrupt.jpg").write_bytes((images / "pos2.jpg").read_bytes()[:3000])
    expected["corrupt.jpg"] = "corrupt"

    # a positive inside a tar shard (with its sidecar as a tar member) and one through a .txt list
    st = samples[TAR_INDEX]
    with tarfile.open(root / "extra.tar", "w") as tar:
        for name, data in ((f"tar{TAR_INDEX}.jpg", _jpeg(st["image"])),
                           (f"tar{TAR_INDEX}.json", json.dumps(_annotation(_xyxy(st), st["keypoints"])).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    expected[f"tar{TAR_INDEX}.jpg"] = ""
    listed = root / "listed"
    listed.mkdir(exist_ok=True)
    sl = samples[LIST_INDEX]
    (listed / f"list{LIST_INDEX}.jpg").write_bytes(_jpeg(sl["image"]))
    (listed / f"list{LIST_INDEX}.json").write_text(json.dumps(_annotation(_xyxy(sl), sl["keypoints"])))
    (root / "list.txt").write_text(f"# one path per line\nlisted/list{LIST_INDEX}.jpg\n")
    expected[f"list{LIST_INDEX}.jpg"] = ""
    for i in POSITIVE_INDICES:
        expected[f"pos{i}.jpg"] = ""
    return expected


def collection_inputs(root: Path) -> list[str]:
    return [str(root / "images"), str(root / "extra.tar"), str(root / "list.txt")]


def curation_config(root: Path, **overrides) -> dict:
    """The pipeline configuration the tests use (sizes scaled to 512x384 images, tiny CLIP)."""
    cfg = {
        "quality": {"min_short_side": 256},
        "person": {"detector": "annotations", "min_box_short_side": 64},
        "head": {"method": "keypoints", "require_head": True},
        "clip": {"model": str(root / "clip"), "min_photo_prob": 0.0, "aesthetic_head": str(root / "aesthetic.pth"),
                 "batch_size": 8},
        "dedup": {"phash_max_distance": 6, "embedding_threshold": 0.99},
        "balance": {"clusters": [3, 2]},
        "output": {"shard_size": 3, "report_examples": 2},
        "ray": {"batch_size": 4, "block_size": 4},
    }
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    return cfg
