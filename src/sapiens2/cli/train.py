"""``sapiens2 train``: fine-tune a task model (pose, seg, normal, pointmap, albedo) on a dataset folder."""
from __future__ import annotations

import argparse
import logging

from sapiens2.cli.common import PRECISION_OF_DTYPE, add_dtype, add_input_size, add_progress, error, progress_enabled

logger = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, metavar="TASK",
                   help="pose, seg, normal, pointmap or albedo (aliases as in predict, e.g. bodyseg)")
    p.add_argument("--data", required=True,
                   help="training dataset: a folder with annotations.json (sapiens2 synth layout) or, for pose, "
                        "a COCO keypoint JSON (308 keypoints or COCO-WholeBody 133)")
    p.add_argument("--model", default=None,
                   help="initialisation: a pretrain or task checkpoint (published name such as "
                        "sapiens2-pretrain-0.4b, or a file), or an arch name (e.g. sapiens2_tiny) for random "
                        "weights (default sapiens2-pretrain-0.4b)")
    p.add_argument("--val", default=None, help="held-out dataset evaluated periodically")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this fraction of --data's images (the last ids) when --val is not given")
    p.add_argument("-o", "--output", default=None, help="run folder: checkpoints, metrics.csv, config.yaml "
                                                        "(default runs/train)")
    p.add_argument("--config", default=None, help="YAML file of config values (see sapiens2.training.config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set optim.lr=1e-4 --set data.input_size=[512,384]; "
                        "repeatable, applied after --config")
    p.add_argument("--iters", type=int, default=None, help="number of optimiser steps (num_iters)")
    p.add_argument("--batch-size", type=int, default=None, help="batch per process (data.batch_size)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (optim.lr)")
    add_input_size(p, help="model input size HxW, multiples of 16 (data.input_size; default: the task's official "
                           "size)")
    add_dtype(p, None, allow_auto=True, precision_alias=True,
              help="compute dtype (precision; default auto: bfloat16 on CUDA, float32 elsewhere)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--distributed", choices=("ddp", "fsdp"), default=None,
                   help="data-parallel mode under torchrun (default ddp; fsdp = FSDP2 fully_shard)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT_DIR",
                   help="continue from the latest checkpoint in the run folder (or the given one)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in a folder that holds another one (its checkpoints, metrics and model "
                        "are deleted first); without it such a folder is refused")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_progress(p)
    p.epilog = ("examples:\n"
                "  sapiens2 train --task seg --data synth/ --model sapiens2-pretrain-0.4b -o runs/seg\n"
                "  sapiens2 train --task pose --data coco_wholebody.json --set data.batch_size=4 --resume\n"
                "  torchrun --nproc-per-node 8 -m sapiens2 train --task normal --data DIR --distributed fsdp\n"
                "Official defaults per task and size: sapiens2.training.config.")


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    out = [f"data.train={args.data}"]
    pairs = (("data.val", args.val), ("data.val_fraction", args.val_fraction), ("output_dir", args.output),
             ("num_iters", args.iters), ("data.batch_size", args.batch_size), ("optim.lr", args.lr),
             ("device", args.device), ("distributed", args.distributed),
             ("precision", PRECISION_OF_DTYPE.get(args.dtype)),
             ("data.input_size", list(args.input_size) if args.input_size else None))
    out += [f"{k}={v}" for k, v in pairs if v is not None]
    if args.progress or not progress_enabled(args.progress):  # asked for, or no terminal: else the config's value
        out.append(f"progress={str(progress_enabled(args.progress)).lower()}")
    return out


def run(args: argparse.Namespace) -> int:
    import yaml

    from sapiens2.errors import Sapiens2Error, UsageError
    from sapiens2.training.config import config_to_dict, load_config

    try:
        # Flags first, then --set, so an explicit --set wins over a convenience flag.
        config = load_config(args.task, args.model, args.config, _flag_overrides(args) + list(args.overrides))
    except (ValueError, FileNotFoundError) as e:
        error("train", str(e))
        return 2
    if args.resume and args.overwrite:
        error("train", "--resume and --overwrite contradict each other: continue the run, or replace it")
        return 2
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    from sapiens2.training.distributed import cleanup_distributed
    from sapiens2.training.trainer import Trainer
    try:
        trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
        result = trainer.fit()
    except UsageError:  # reported by `sapiens2` under this command's usage line
        raise
    except (Sapiens2Error, ValueError, FileNotFoundError) as e:
        error("train", str(e))
        return 2
    finally:
        cleanup_distributed()
    if trainer.dist.is_main:
        if result.losses:
            print(f"trained {config.task} for steps {result.start_step + 1}..{result.start_step + len(result.losses)}"
                  f": loss {result.losses[0]:.4g} -> {result.losses[-1]:.4g}")
        if result.metrics:
            from sapiens2.evaluation import format_table
            print(format_table({k: v for k, v in result.metrics.items() if not isinstance(v, dict)},
                               title="held-out metrics"))
        print(f"model: {config.output_dir}/model.safetensors")
    return 0
