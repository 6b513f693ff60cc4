"""``sapiens2 features``: backbone feature maps of images, as .npy plus a PCA picture."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputSizeError, Sapiens2Error, UsageError
from ..io import DEFAULT_MAX_PIXELS, discover_inputs, load_image, write_npy, write_png
from ..serving.completion import clear_record, is_complete, own_output_filter, write_record
from .common import add_dtype, add_input_size, add_progress, error, progress_enabled
from ..tasks.preprocess import stretch_resize, to_model_batch

log = logging.getLogger(__name__)

FEATURE_SUFFIXES = (".features.npy", ".features.png")


def add_parser(p: argparse.ArgumentParser) -> None:
    p.epilog = ("examples:\n  sapiens2 features photo.jpg -o out/\n"
                "  sapiens2 features photos/ --model sapiens2-pretrain-1b --device cuda --dtype bfloat16 -o out/\n"
                "  sapiens2 features photo.jpg --checkpoint sapiens2_0.4b_pretrain.safetensors -o out/\n"
                "writes <stem>.features.npy (C, H/16, W/16) and <stem>.features.png (first 3 principal components)")
    p.add_argument("inputs", nargs="+", help="images or folders (searched recursively)")
    p.add_argument("-o", "--output", default="out", help="output folder (default: out)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="sapiens2-pretrain-0.4b",
                     help="published model name (downloaded once), e.g. sapiens2-pretrain-1b (default: %(default)s)")
    src.add_argument("--checkpoint", help="local checkpoint file (.safetensors/.pth, official or transformers layout)")
    src.add_argument("--random-weights", metavar="ARCH",
                     help="no download: a randomly initialised ARCH (e.g. sapiens2_tiny), for smoke tests only")
    add_input_size(p, default="1024x768", help="model input HxW, multiples of 16 (default: 1024x768)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]|mps (default: auto)")
    add_dtype(p, "float32")
    p.add_argument("--save-dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the written .npy (default: float16)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    add_progress(p)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="skip images with more than N pixels, checked from the file header before decoding "
                        "(default %(default)s, 0 = no limit)")


def pca_picture(features: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) features -> (H, W, 3) uint8: the first three principal components as RGB."""
    c, h, w = features.shape
    flat = features.reshape(c, -1).T.astype(np.float64)
    flat -= flat.mean(0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    comps = flat @ vt[:3].T
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    rgb = np.clip((comps - lo) / np.maximum(hi - lo, 1e-12), 0, 1).reshape(h, w, -1)
    if rgb.shape[-1] < 3:
        rgb = np.concatenate([rgb, np.zeros((h, w, 3 - rgb.shape[-1]))], -1)
    return cv2.resize((rgb * 255).astype(np.uint8), (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def _load_backbone(args, device, input_hw):
    import sapiens2

    if args.random_weights:
        log.warning("random weights (%s): the features mean nothing; use --model or --checkpoint for real ones",
                    args.random_weights)
        return sapiens2.build_backbone(args.random_weights, img_size=input_hw).to(device).eval()
    return sapiens2.load_backbone(args.checkpoint or args.model, device=device)


def run(args: argparse.Namespace) -> int:
    from ..runtime import resolve_device
    from ..inference.predictor import resolve_amp_dtype

    input_hw = args.input_size
    device = resolve_device(args.device)  # a DeviceError is a usage error (status 2), before any work
    try:
        amp = resolve_amp_dtype(args.dtype, device)
        found = discover_inputs(args.inputs, exclude=own_output_filter(args.output, FEATURE_SUFFIXES))
        for path in found.missing:
            log.error("no such file or folder: %s", path)
        images = found.images
        if found.videos:
            log.warning("skipping %d video(s): features takes images", len(found.videos))
        if not images:
            log.error("no images to process")
            return 1
        model = _load_backbone(args, device, input_hw)
        model.grid_size(*input_hw)  # an --input-size this model cannot tile fails here, before any image
    except InputSizeError as e:
        raise UsageError(str(e)) from e
    except Sapiens2Error as e:
        error("features", str(e))
        return 1
    out_dir = Path(args.output)
    # What decides the files: a re-run skips an image only when its completion record says they were made from
    # this same file with these settings (partial or stale outputs are redone).
    settings = {"command": "features", "model": str(args.checkpoint or args.random_weights or args.model),
                "random_weights": bool(args.random_weights), "input_size": list(input_hw), "dtype": args.dtype,
                "save_dtype": args.save_dtype}
    done = failed = skipped = 0
    for item in tqdm(images, desc="features", unit="img", disable=not progress_enabled(args.progress)):
        stem = out_dir / item.relative.with_suffix("")
        targets = [stem.with_name(stem.name + suffix) for suffix in FEATURE_SUFFIXES]
        if not args.overwrite and is_complete(stem, item.path, targets, settings):
            skipped += 1
            continue
        clear_record(stem)
        try:
            rgb = load_image(item.path, max_pixels=args.max_pixels).rgb
            batch = to_model_batch([stretch_resize(rgb, input_hw, cv2.INTER_CUBIC)], device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                feats = model(batch)[0].float().cpu().numpy()
            write_npy(targets[0], feats.astype(args.save_dtype))
            pic = np.concatenate([rgb, pca_picture(feats, rgb.shape[:2])], axis=1)
            write_png(targets[1], pic)
            write_record(stem, item.path, targets, settings)
            done += 1
        except Sapiens2Error as e:
            log.error("skipped %s: %s", item.path, e)
            failed += 1
    log.info("features: %d written, %d skipped (outputs exist), %d failed -> %s", done, skipped, failed, out_dir)
    return 0 if done or skipped else 1
