"""``sapiens2 eval``: metrics of a task model on a dataset, printed as a table and saved as JSON."""
from __future__ import annotations

import argparse
import sys
import time


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=("pose", "seg", "normal", "pointmap", "albedo"))
    p.add_argument("--data", required=True, help="dataset folder with annotations.json (or a COCO keypoint JSON)")
    p.add_argument("--checkpoint", required=True,
                   help="task checkpoint: a file (e.g. runs/seg/model.safetensors) or a published name")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="model input size (default: what the checkpoint was trained at; 1024 768 for official)")
    p.add_argument("--image-root", default=None,
                   help="pose COCO JSON: folder its image file names are relative to (default: the JSON's folder)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    p.add_argument("--flip-test", action="store_true", help="pose: average with the mirrored crop (official)")
    p.add_argument("-o", "--output", default=None, help="JSON file for the results (default eval_<task>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = ("examples:\n  sapiens2 eval --task seg --data synth_val/ --checkpoint runs/seg/model.safetensors\n"
                "  sapiens2 eval --task pose --data person_keypoints.json --checkpoint sapiens2-pose-0.4b --flip-test")


def run(args: argparse.Namespace) -> int:
    import torch

    from sapiens2 import load_model
    from sapiens2.data.datasets import build_dataset
    from sapiens2.errors import Sapiens2Error
    from sapiens2.evaluation import format_table, save_json
    from sapiens2.evaluation.runner import evaluate
    from sapiens2.training.distributed import pick_device
    from sapiens2.training.trainer import autocast_dtype

    device = pick_device(args.device)
    size = tuple(args.input_size) if args.input_size else None  # None: load_model's trained-at size
    try:
        model = load_model(args.checkpoint, task=args.task, img_size=size, device=device)
        dataset = build_dataset(args.task, args.data, train=False, input_hw=model.img_size,
                                image_root=args.image_root)
        t0 = time.perf_counter()
        metrics = evaluate(model.eval(), dataset, batch_size=args.batch_size, device=device,
                           autocast=autocast_dtype(args.precision, device), flip_test=args.flip_test,
                           progress=not args.no_progress)
    except (Sapiens2Error, ValueError, FileNotFoundError, torch.cuda.OutOfMemoryError) as e:
        print(f"sapiens2 eval: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(format_table(metrics, title=f"{args.task} on {args.data} ({len(dataset)} items, {seconds:.1f} s)"))
    out = args.output or f"eval_{args.task}.json"
    save_json(metrics, out, task=args.task, data=str(args.data), checkpoint=str(args.checkpoint),
              input_size=list(model.img_size), flip_test=bool(args.flip_test), items=len(dataset))
    print(f"saved {out}")
    return 0
