"""Curation throughput: per-image cost of each stage on one core, the streaming pipeline on Ray with 1 and 2 CPUs,
and the plan for a 4-billion-image collection derived from the measured costs.

    python benchmarks/curate.py [--images 24] [--clip-arch tiny|b32|l14] [--device cpu|cuda]

CLIP weights are random (nothing is downloaded): ``b32`` / ``l14`` build the real ViT-B/32 / ViT-L/14 shapes, so
the cost is the real one. Ratios are against the decode stage measured in the same run. Timings on a shared
machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

ARCHS = {  # vision tower shapes (text tower kept tiny: prompts are encoded once per actor)
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                 patch_size=16, projection_dim=16),
    "b32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
                patch_size=32, projection_dim=512),
    "l14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=768),
}


def write_clip(folder: Path, arch: str) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    a = dict(ARCHS[arch])
    proj = a.pop("projection_dim")
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(vocab) + 1, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=0, eos_token_id=1, pad_token_id=1),
                     vision_config=a, projection_dim=proj)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)


def per_image(fn, items, repeat=1) -> float:
    fn(items[0])  # warm-up (lazy init, caches)
    t = time.perf_counter()
    for _ in range(repeat):
        for it in items:
            fn(it)
    return (time.perf_counter() - t) / (len(items) * repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--clip-arch", choices=list(ARCHS), default="b32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from sapiens2.curation.clip_model import ClipEncoder
    from sapiens2.curation.config import TextConfig
    from sapiens2.curation.decode import shrink
    from sapiens2.curation.head_pose import CascadeHeadFinder
    from sapiens2.curation.phash import perceptual_hash
    from sapiens2.curation.quality import quality_metrics
    from sapiens2.curation.text_detect import text_area_fraction
    from sapiens2.data.synth import generate_sample
    from sapiens2.io import decode_image
    from sapiens2.tasks.detection import HogPersonDetector

    tmp = Path(tempfile.mkdtemp(prefix="curate_bench_"))
    # "web-like" inputs: 1024x768 JPEGs (synthetic people upscaled from 512x384)
    images = [cv2.resize(generate_sample(0, i, 512, 384, 1)["image"], (768, 1024)) for i in range(args.images)]
    encoded = [cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for im in images]
    work = [shrink(im, 1024)[0] for im in images]
    hog, cascade = HogPersonDetector(), CascadeHeadFinder()
    boxes = [np.array([100.0, 100.0, 600.0, 1000.0])] * len(work)
    gray = [cv2.cvtColor(w, cv2.COLOR_RGB2GRAY) for w in work]

    costs = {
        "decode (JPEG 1024x768)": per_image(lambda b: decode_image(b), encoded),
        "quality metrics": per_image(quality_metrics, work),
        "perceptual hash": per_image(perceptual_hash, work),
        "text (MSER lines)": per_image(lambda im: text_area_fraction(im, TextConfig()), work),
        "person (HOG, 800 px)": per_image(hog.detect, work),
        "head (face cascades)": per_image(lambda i: cascade.find(gray[i], boxes[i]), list(range(len(work)))),
    }
    clip_dir = tmp / "clip"
    write_clip(clip_dir, args.clip_arch)
    enc = ClipEncoder(str(clip_dir), device=args.device)
    batch = 16
    enc.encode_images(work[:batch])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        enc.encode_images((work * ((batch // len(work)) + 1))[:batch])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    costs[f"CLIP {args.clip_arch} ({args.device}, batch {batch}, incl. preprocessing)"] = \
        (time.perf_counter() - t) / (reps * batch)

    base = costs["decode (JPEG 1024x768)"]
    print(f"per-image cost on one core (torch threads = 1); {args.images} images")
    print(f"{'stage':58s} {'ms/img':>8s} {'img/s/core':>11s} {'x decode':>9s}")
    for name, c in costs.items():
        print(f"{name:58s} {c * 1e3:8.2f} {1 / c:11.1f} {c / base:9.2f}")

    if not args.skip_ray:
        print("\nstreaming pipeline on Ray Data (HOG detector, face cascades, MSER, tiny CLIP; score_all)")
        from test_curation_helpers import write_linear_head, write_tiny_clip

        import ray

        from sapiens2.curation.config import load_config
        from sapiens2.curation.pipeline import build_per_image_dataset
        from sapiens2.curation.sources import list_inputs

        folder = tmp / "images"
        folder.mkdir()
        n = max(48, args.images * 2)
        for i in range(n):
            (folder / f"{i:04d}.jpg").write_bytes(encoded[i % len(encoded)])
        write_tiny_clip(tmp / "tiny")
        write_linear_head(tmp / "head.pth")
        cfg = load_config({"clip": {"model": str(tmp / "tiny"), "min_photo_prob": 0.0},
                           "head": {"require_head": False}, "person": {"min_box_short_side": 0},
                           "quality": {"min_short_side": 0}, "ray": {"batch_size": 8, "block_size": 8},
                           "score_all": True})
        items = list_inputs(folder)
        rates = {}
        for cpus in (1, 2):
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False,
                     log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            for attempt in ("warm-up", "timed"):
                ds = build_per_image_dataset(ray, items, cfg, tmp / f"parts-{cpus}-{attempt}")
                t = time.perf_counter()
                count = sum(len(b["uid"]) for b in ds.iter_batches(batch_size=None))
                elapsed = time.perf_counter() - t
            rates[cpus] = count / elapsed
            print(f"  {cpus} Ray CPU(s): {count} images in {elapsed:.1f} s = {rates[cpus]:.1f} img/s "
                  f"(includes actor start-up)")
            ray.shutdown()
        print(f"  scaling 1 -> 2 CPUs: x{rates[2] / rates[1]:.2f}")

    total = 4e9
    cpu_stages = {k: v for k, v in costs.items() if not k.startswith("CLIP")}
    cpu_core_hours = {k: total * v / 3600 for k, v in cpu_stages.items()}
    clip_cost = [v for k, v in costs.items() if k.startswith("CLIP")][0]
    plan = {"images": total, "cpu_core_hours": {k: round(v) for k, v in cpu_core_hours.items()},
            "cpu_core_hours_total": round(sum(cpu_core_hours.values())),
            f"clip_{args.clip_arch}_{args.device}_hours": round(total * clip_cost / 3600)}
    print("\n4-billion-image plan from these costs (every image through every stage; the funnel makes the later "
          "stages cheaper):")
    print(json.dumps(plan, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
