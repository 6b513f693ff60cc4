"""``sapiens2 eval``: metrics of a task model on a dataset, printed as a table and saved as JSON."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from sapiens2.cli.common import PRECISION_OF_DTYPE, add_dtype, add_input_size, add_progress, error, progress_enabled


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, metavar="TASK",
                   help="pose, seg, normal, pointmap or albedo (aliases as in predict, e.g. bodyseg)")
    p.add_argument("--data", required=True, help="dataset folder with annotations.json (or a COCO keypoint JSON)")
    p.add_argument("--checkpoint", required=True,
                   help="task checkpoint: a file (e.g. runs/seg/model.safetensors) or a published name")
    add_input_size(p, two_numbers=True,
                   help="model input size HxW (default: what the checkpoint was trained at; 1024x768 for official)")
    p.add_argument("--image-root", default=None,
                   help="pose COCO JSON: folder its image file names are relative to (default: the JSON's folder)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: best available)")
    add_dtype(p, "auto", allow_auto=True, precision_alias=True,
              help="compute dtype (default auto: bfloat16 on CUDA, float32 elsewhere)")
    p.add_argument("--flip-test", action="store_true", help="pose: average with the mirrored crop (official)")
    p.add_argument("-o", "--output", default=None, metavar="OUT",
                   help="output folder for eval_<task>.json (default: the current folder); a path ending in "
                        ".json names the file itself")
    add_progress(p)
    p.epilog = ("examples:\n  sapiens2 eval --task seg --data synth_val/ --checkpoint runs/seg/model.safetensors\n"
                "  sapiens2 eval --task pose --data person_keypoints.json --checkpoint sapiens2-pose-0.4b --flip-test")


def _output_path(output: str | None, task: str) -> Path:
    """``-o`` is a folder, as in every other sub-command; a path ending in .json (the older form) is the file."""
    if output is not None and output.lower().endswith(".json"):
        return Path(output)
    folder = Path(output or ".")
    if folder.exists() and not folder.is_dir():
        from sapiens2.errors import UsageError
        raise UsageError(f"-o {output!r} is a file; give a folder (eval_{task}.json is written there) or a .json path")
    return folder / f"eval_{task}.json"


def run(args: argparse.Namespace) -> int:
    import torch

    from sapiens2 import load_model
    from sapiens2.training.datasets import build_dataset
    from sapiens2.errors import Sapiens2Error, UsageError
    from sapiens2.evaluation import format_table, save_json
    from sapiens2.evaluation.runner import evaluate
    from sapiens2.runtime import resolve_device
    from sapiens2.training.trainer import autocast_dtype

    from sapiens2.training.config import trainable_task

    try:
        args.task = trainable_task(args.task)  # the task table's names and aliases, its error for the rest
    except UsageError as e:
        error("eval", str(e))
        return 2
    device = resolve_device(args.device)  # an unavailable device is a usage error, before the model loads
    out = _output_path(args.output, args.task)
    size = tuple(args.input_size) if args.input_size else None  # None: load_model's trained-at size
    try:
        model = load_model(args.checkpoint, task=args.task, img_size=size, device=device)
        dataset = build_dataset(args.task, args.data, train=False, input_hw=model.img_size,
                                image_root=args.image_root)
        t0 = time.perf_counter()
        metrics = evaluate(model.eval(), dataset, batch_size=args.batch_size, device=device,
                           autocast=autocast_dtype(PRECISION_OF_DTYPE[args.dtype], device),
                           flip_test=args.flip_test, progress=progress_enabled(args.progress))
    except UsageError:  # reported by `sapiens2` under this command's usage line
        raise
    except (Sapiens2Error, ValueError, FileNotFoundError, torch.cuda.OutOfMemoryError) as e:
        error("eval", str(e))
        return 2
    seconds = time.perf_counter() - t0
    print(format_table(metrics, title=f"{args.task} on {args.data} ({len(dataset)} items, {seconds:.1f} s)"))
    save_json(metrics, out, task=args.task, data=str(args.data), checkpoint=str(args.checkpoint),
              input_size=list(model.img_size), flip_test=bool(args.flip_test), items=len(dataset))
    print(f"saved {out}")
    return 0
