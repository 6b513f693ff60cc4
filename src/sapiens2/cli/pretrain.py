"""``sapiens2 pretrain``: self-supervised backbone pretraining (masked reconstruction + DINO/iBOT distillation).

    sapiens2 pretrain --data /data/shards --arch sapiens2_0.4b --steps 100000 --batch-size 8 --out runs/pt
    torchrun --nproc-per-node 8 -m sapiens2 pretrain --data 'shards/shard-{000000..000999}.tar' ...
    sapiens2 pretrain --export runs/pt/checkpoints/step_00010000 --out backbone.safetensors
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder of images, folder/glob/brace range of WebDataset tar shards "
                                       "(comma-separated)")
    parser.add_argument("--arch", default="sapiens2_0.4b", help="backbone arch (default sapiens2_0.4b; tiny for tests)")
    parser.add_argument("--init", help="start from this backbone checkpoint (path or published name)")
    parser.add_argument("--out", "--output-dir", dest="output_dir", default="runs/pretrain",
                        help="output folder (checkpoints, metrics.csv, backbone.safetensors)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default 100000)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per process and step (default 8)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="global view size (default 1024 768)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4)")
    parser.add_argument("--mask-ratio", type=float, default=None, help="hidden patch fraction (default 0.75)")
    parser.add_argument("--local-crops", type=int, default=None, help="extra small local views (multi-crop; default 0)")
    parser.add_argument("--workers", type=int, default=None, help="data loader workers per process (default 4)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None)
    parser.add_argument("--device", default=None, help="cuda / mps / cpu (default: best available)")
    parser.add_argument("--distributed", choices=("ddp", "fsdp"), default=None, help="under torchrun (default ddp)")
    parser.add_argument("--activation-checkpointing", action="store_true", default=None)
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    parser.add_argument("--config", help="YAML file of PretrainConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. objective.dino_weight=0.5 or mask.mode=block")
    parser.add_argument("--export", metavar="CHECKPOINT",
                        help="only export: a checkpoint folder (or training_state.pt) -> --out .safetensors")
    parser.add_argument("--which", choices=("teacher", "student"), default="teacher",
                        help="backbone to export (default teacher)")
    parser.add_argument("--no-progress", action="store_true")


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
              "precision": args.precision, "device": args.device, "distributed": args.distributed,
              "activation_checkpointing": args.activation_checkpointing,
              "views.global_size": list(args.size) if args.size else None}
    apply_overrides(cfg, {k: v for k, v in direct.items() if v is not None})
    apply_overrides(cfg, args.overrides)
    if args.no_resume:
        cfg.resume = False
    if args.no_progress:
        cfg.progress = False
    return cfg


def _export_only(args: argparse.Namespace) -> int:
    import torch

    from ..training.pretrain.config import PretrainConfig
    from ..training.pretrain.export import export_backbone
    from ..training.pretrain.trainer import build_pretrain_model

    src = Path(args.export)
    state_file = src / "training_state.pt" if src.is_dir() else src
    if not state_file.is_file():
        print(f"error: no training_state.pt at {args.export}")
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.export:
        return _export_only(args)
    from ..training.pretrain.trainer import pretrain

    try:
        cfg = build_config(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    if not cfg.data:
        print("error: --data is required (a folder of images or tar shards)")
        return 2
    try:
        result = pretrain(cfg)
    except ValueError as exc:  # bad data / config, reported without a traceback
        print(f"error: {exc}")
        return 2
    if result.export_path is not None:
        print(f"pretrained {result.steps} steps; backbone exported to {result.export_path}")
    return 0
