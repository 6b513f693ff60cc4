"""Write synthetic samples to disk in the formats the training loaders read.

Layout of an output directory (``{id}`` = zero-padded 6-digit sample index, e.g. ``000042``)::

    manifest.json          generator settings and one entry per sample (relative paths of all its files)
    annotations.json       COCO keypoints file (images, annotations, categories)
    images/{id}.png        RGB, 8-bit
    seg/{id}.png           uint8 class ids 0..28, official ids (seg_classes29.json); 0 = background
    instance/{id}.png      uint8, 0 = background, k + 1 = person k (``instance_id`` in the annotations)
    mask/{id}.png          uint8, 255 = any person, 0 = background
    depth/{id}.png         uint16 millimetres along the optical axis (camera z), 0 = background, clipped at 65535
    normal/{id}.npy        float16 (H, W, 3) unit normals, camera frame (x right, y down, z forward), pointing at
                           the camera; 0 on background
    pointmap/{id}.npy      float32 (H, W, 3) camera-frame XYZ in metres; 0 on background
    albedo/{id}.npy        float16 (H, W, 3) linear reflectance in [0, 1]; 0 on background

Pixel convention: integer coordinates are pixel centres; ``pointmap[v, u] = depth[v, u] * K^-1 [u, v, 1]`` exactly
(up to the float32 storage). Keypoint coordinates use the same convention (pixel (u, v) is at x = u, y = v).

``annotations.json`` (COCO keypoints, one category ``person`` with the 308 official keypoint names and the official
skeleton as 1-based links)::

    images:      {id, file_name, height, width, intrinsics: [fx, fy, cx, cy], seg_file, depth_file, normal_file,
                  pointmap_file, albedo_file, mask_file, instance_file}
    annotations: {id, image_id, category_id: 1, instance_id, bbox: [x, y, w, h] (visible pixels, pixel edges),
                  area (visible pixel count), iscrowd: 0, num_keypoints (visibility > 0),
                  keypoints: [x1, y1, v1, ... x308, y308, v308]}

Visibility: 2 = in the image and not occluded, 1 = placed but occluded or outside the image, 0 = not placed.
Generation is deterministic: sample ``i`` of seed ``s`` depends only on ``(s, i, height, width, max_people)``,
whatever the number of worker processes.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ..specs import keypoint_info, seg_classes
from .render import generate_sample

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
DIRS = ("images", "seg", "instance", "mask", "depth", "normal", "pointmap", "albedo")


def sample_files(index: int) -> dict[str, str]:
    sid = f"{index:06d}"
    ext = {"normal": "npy", "pointmap": "npy", "albedo": "npy"}
    return {d: f"{d}/{sid}.{ext.get(d, 'png')}" for d in DIRS}


def _png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def save_sample(root: Path, index: int, sample: dict[str, Any]) -> dict[str, str]:
    """Write one sample's image and dense maps under ``root``; returns their relative paths."""
    files = sample_files(index)
    _png(root / files["images"], sample["image"][..., ::-1])
    _png(root / files["seg"], sample["seg"])
    _png(root / files["instance"], sample["instance"])
    _png(root / files["mask"], sample["mask"] * np.uint8(255))
    depth_mm = np.clip(np.rint(sample["depth"] * 1000.0), 0, 65535).astype(np.uint16)
    _png(root / files["depth"], depth_mm)
    np.save(root / files["normal"], sample["normal"].astype(np.float16))
    np.save(root / files["pointmap"], sample["pointmap"].astype(np.float32))
    np.save(root / files["albedo"], sample["albedo"].astype(np.float16))
    return files


def _work(job: tuple[str, int, int, int, int, int]) -> dict[str, Any]:
    root, seed, index, height, width, max_people = job
    sample = generate_sample(seed, index, height, width, max_people)
    files = save_sample(Path(root), index, sample)
    return {"index": index, "files": files, "K": sample["K"], "keypoints": sample["keypoints"],
            "boxes": sample["boxes"], "person_ids": sample["person_ids"],
            "areas": [int((sample["instance"] == k + 1).sum()) for k in sample["person_ids"]]}


def write_dataset(out_dir: str | os.PathLike, num: int, seed: int = 0, height: int = 256, width: int = 192,
                  max_people: int = 4, workers: int = 1, progress: bool = True) -> Path:
    """Generate ``num`` samples into ``out_dir`` (created) and write the COCO file and the manifest."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    for d in DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), seed, i, height, width, max_people) for i in range(num)]
    results: Iterator[dict[str, Any]]
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_work, jobs, chunksize=4) if pool else map(_work, jobs)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=num, desc="synth", unit="img")
        info = keypoint_info()
        images, annotations, entries = [], [], []
        for r in results:
            K = r["K"]
            f = r["files"]
            images.append({"id": r["index"], "file_name": f["images"], "height": height, "width": width,
                           "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
                           **{f"{k}_file": v for k, v in f.items() if k != "images"}})
            for kp, box, pid, area in zip(r["keypoints"], r["boxes"], r["person_ids"], r["areas"]):
                flat = np.round(kp.astype(np.float64), 2)
                flat[:, 2] = kp[:, 2]
                annotations.append({"id": len(annotations) + 1, "image_id": r["index"], "category_id": 1,
                                    "instance_id": int(pid) + 1, "bbox": [round(float(b), 2) for b in box],
                                    "area": area, "iscrowd": 0, "num_keypoints": int((kp[:, 2] > 0).sum()),
                                    "keypoints": [float(v) if j % 3 < 2 else int(v)
                                                  for j, v in enumerate(flat.reshape(-1))]})
            entries.append({"index": r["index"], **f, "people": len(r["person_ids"])})
    finally:
        if pool:
            pool.shutdown()
    coco = {"info": {"description": "sapiens2 synthetic humans", "version": FORMAT_VERSION},
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(info.names),
                            "skeleton": [[a + 1, b + 1] for a, b in info.skeleton]}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    manifest = {"format": "sapiens2-synth", "version": FORMAT_VERSION, "seed": seed, "num": num,
                "height": height, "width": width, "max_people": max_people,
                "pixel_centre": "integer coordinates are pixel centres",
                "units": {"depth": "uint16 millimetres", "pointmap": "float32 metres", "normal": "float16 unit",
                          "albedo": "float16 [0, 1]"},
                "classes": list(seg_classes().names), "annotations": "annotations.json", "samples": entries}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    logger.info("wrote %d samples (%d people) to %s", num, len(annotations), root)
    return root
