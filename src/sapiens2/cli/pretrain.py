"""``sapiens2 pretrain``: self-supervised backbone pretraining (masked reconstruction + DINO/iBOT distillation).

    sapiens2 pretrain --data /data/shards --arch sapiens2_0.4b --steps 100000 --batch-size 8 --out runs/pt
    torchrun --nproc-per-node 8 -m sapiens2 pretrain --data 'shards/shard-{000000..000999}.tar' ...
    sapiens2 pretrain --export runs/pt/checkpoints/step_00010000 --out backbone.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import PRECISION_OF_DTYPE, add_dtype, add_input_size, add_progress, error, progress_enabled


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder of images, folder/glob/brace range of WebDataset tar shards "
                                       "(comma-separated)")
    parser.add_argument("--arch", default="sapiens2_0.4b", help="backbone arch (default sapiens2_0.4b; tiny for tests)")
    parser.add_argument("--init", help="start from this backbone checkpoint (path or published name)")
    parser.add_argument("--out", "--output-dir", dest="output_dir", default="runs/pretrain",
                        help="output folder (checkpoints, metrics.csv, backbone.safetensors)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default 100000)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per process and step (default 8)")
    add_input_size(parser, "--input-size", "--size", dest="size", two_numbers=True,
                   help="global view size HxW (default 1024x768; --size H W is the older spelling)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4)")
    parser.add_argument("--mask-ratio", type=float, default=None, help="hidden patch fraction (default 0.75)")
    parser.add_argument("--local-crops", type=int, default=None, help="extra small local views (multi-crop; default 0)")
    parser.add_argument("--workers", type=int, default=None, help="data loader workers per process (default 4)")
    add_dtype(parser, None, allow_auto=True, precision_alias=True,
              help="compute dtype: auto (bfloat16 on CUDA, else float32), float32 or bfloat16")
    parser.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default=None, help="under torchrun (default ddp)")
    parser.add_argument("--activation-checkpointing", action="store_true", default=None)
    parser.add_argument("--no-resume", action="store_true",
                        help="start a new run, not the continuation of the one in --out (needs --overwrite when "
                             "--out holds one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --no-resume: delete the run already in --out (checkpoints, metrics, backbone)")
    parser.add_argument("--config", help="YAML file of PretrainConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. objective.dino_weight=0.5 or mask.mode=block")
    parser.add_argument("--export", metavar="CHECKPOINT",
                        help="only export: a checkpoint folder (or training_state.pt) -> --out .safetensors")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher",
                        help="backbone to export (default teacher)")
    add_progress(parser)


def build_config(args: argparse.Namespace):
    import yaml

    from ..training.config import apply_overrides
    from ..training.pretrain.config import PretrainConfig

    cfg = PretrainConfig()
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        apply_overrides(cfg, yaml.safe_load(path.read_text()) or {})
    direct = {"data": args.data, "arch": args.arch, "init": args.init, "output_dir": args.output_dir,
              "num_steps": args.steps, "batch_size": args.batch_size, "optim.lr": args.lr,
              "mask.ratio": args.mask_ratio, "views.num_local": args.local_crops, "num_workers": args.workers,
              "precision": PRECISION_OF_DTYPE.get(args.dtype), "device": args.device, "distributed": args.distributed,
              "activation_checkpointing": args.activation_checkpointing,
              "views.global_size": list(args.size) if args.size else None}
    apply_overrides(cfg, {k: v for k, v in direct.items() if v is not None})
    apply_overrides(cfg, args.overrides)
    if args.no_resume:
        cfg.resume = False
    if args.progress is not None or cfg.progress:  # a config file's `progress: false` stands unless overridden
        cfg.progress = progress_enabled(args.progress)
    return cfg


def _export_only(args: argparse.Namespace) -> int:
    import torch

    from ..training.pretrain.config import PretrainConfig
    from ..training.pretrain.export import export_backbone
    from ..training.pretrain.trainer import build_pretrain_model

    src = Path(args.export)
    state_file = src / "training_state.pt" if src.is_dir() else src
    if not state_file.is_file():
        error("pretrain", f"no training_state.pt at {args.export}")
        return 2
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    cfg = PretrainConfig()
    from ..training.config import apply_overrides
    apply_overrides(cfg, {k: v for k, v in state["config"].items() if k not in ("init",)})
    cfg.init = None
    model = build_pretrain_model(cfg, torch.device("cpu"))
    model.load_state_dict(state["model"])
    out = Path(args.output_dir)
    if out.suffix != ".safetensors":
        out = out / "backbone.safetensors"
    export_backbone(model, out, which=args.which)
    print(f"exported the {args.which} backbone ({cfg.arch}) to {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.export:
        return _export_only(args)
    from ..errors import UsageError
    from ..training.pretrain.trainer import pretrain

    try:
        cfg = build_config(args)
    except (ValueError, FileNotFoundError) as exc:
        error("pretrain", str(exc))
        return 2
    if not cfg.data:
        error("pretrain", "--data is required (a folder of images or tar shards)")
        return 2
    if args.overwrite and cfg.resume:
        error("pretrain", "--overwrite replaces the run in --out: give --no-resume with it")
        return 2
    try:
        result = pretrain(cfg, overwrite=args.overwrite)
    except UsageError:  # reported by `sapiens2` under this command's usage line
        raise
    except ValueError as exc:  # bad data / config, reported without a traceback
        error("pretrain", str(exc))
        return 2
    if result.export_path is not None:
        print(f"pretrained {result.steps} steps; backbone exported to {result.export_path}")
    return 0
