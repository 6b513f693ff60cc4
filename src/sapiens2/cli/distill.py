"""``sapiens2 distill``: train small students (sapiens2_student_pose / _seg) on a teacher's soft outputs.

The fine-tuning trainer does the work (``TrainConfig.distill``): same schedules, checkpoints, exact resume and
torchrun DDP/FSDP as ``sapiens2 train``. One run folder per task under ``-o``: ``RUN/<task>/model.safetensors`` is a
task checkpoint that ``predict --checkpoint``, ``eval`` and :func:`sapiens2.load_model` take like any other.
"""
from __future__ import annotations

import argparse
import logging

from sapiens2.cli.common import PRECISION_OF_DTYPE, add_dtype, add_input_size, add_progress, error, progress_enabled

logger = logging.getLogger(__name__)
TASKS = ("pose", "seg")


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", action="append", default=[], metavar="TASK=NAME|PATH",
                   help="teacher per task, run on the fly at its own input size: a published name "
                        "(sapiens2-pose-1b) or a task checkpoint file; repeatable (pose, seg)")
    p.add_argument("--targets", action="append", default=[], metavar="[TASK=]DIR",
                   help="read precomputed teacher outputs instead (layout: sapiens2/training/distill/targets.py; "
                        "written by --write-targets or any batch-inference job); DIR holds <task>/manifest.json")
    p.add_argument("--write-targets", default=None, metavar="DIR",
                   help="only run each --teacher over --data and write its outputs to DIR/<task>/, then exit")
    p.add_argument("--student", action="append", default=[], metavar="[TASK=]ARCH",
                   help="student arch (default sapiens2_student_<task>); or a checkpoint whose backbone starts it")
    p.add_argument("--data", required=True,
                   help="images: a folder of images (searched recursively; unlabelled) or an annotated dataset "
                        "(sapiens2 synth layout / COCO JSON), whose labels mix in unless --unlabelled")
    p.add_argument("--unlabelled", action="store_true",
                   help="ignore --data's labels (pose crops still come from its person boxes)")
    p.add_argument("--val", default=None, help="held-out annotated dataset evaluated periodically")
    p.add_argument("-o", "--output", default=None, help="run folder; one sub-folder per task (required unless "
                                                        "--write-targets)")
    p.add_argument("--config", default=None, help="YAML file of config values (as sapiens2 train)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distill.kd_weight=2 --set optim.lr=1e-3; repeatable")
    p.add_argument("--steps", "--iters", dest="iters", type=int, default=None, help="optimiser steps (num_iters)")
    p.add_argument("--batch-size", type=int, default=None, help="batch per process (data.batch_size)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (optim.lr)")
    add_input_size(p, help="student input size HxW (default: the student arch's, 256x192 pose, 512x384 seg)")
    add_dtype(p, None, allow_auto=True, precision_alias=True,
              help="compute dtype (default auto: bfloat16 on CUDA, float32 elsewhere)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--distributed", choices=("ddp", "fsdp"), default=None, help="under torchrun (default ddp)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT_DIR",
                   help="continue each task's run from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace runs already in the output folder")
    p.add_argument("--print-config", action="store_true", help="print the resolved configs as YAML and exit")
    add_progress(p)
    p.epilog = ("examples:\n"
                "  sapiens2 distill --teacher pose=sapiens2-pose-1b --teacher seg=sapiens2-seg-1b --data images/ "
                "-o runs/students\n"
                "  sapiens2 distill --teacher pose=sapiens2-pose-1b --data images/ --write-targets targets/\n"
                "  sapiens2 distill --targets targets/ --data images/ -o runs/students --steps 20000\n"
                "  torchrun --nproc-per-node 8 -m sapiens2 distill --teacher seg=sapiens2-seg-1b --data images/ -o RUN")


def _per_task(values: list[str], what: str, default_tasks: tuple[str, ...]) -> dict[str, str]:
    """``TASK=VALUE`` items (or a bare VALUE for every task) -> {task: value}."""
    from sapiens2.models.heads.task_table import resolve_task
    out: dict[str, str] = {}
    for item in values:
        task, sep, value = item.partition("=")
        if not sep:
            out.update({t: item for t in default_tasks})
            continue
        name = resolve_task(task)
        if name not in TASKS:
            raise ValueError(f"{what} {item!r}: distillation covers {', '.join(TASKS)}, not {name}")
        if not value:
            raise ValueError(f"{what} {item!r} names no value after '='")
        out[name] = value
    return out


def _config(task: str, student: str, args: argparse.Namespace, teacher: str | None, targets: str | None):
    from sapiens2.models.arch import ARCHS
    from sapiens2.training.config import load_config
    from pathlib import Path
    arch = ARCHS.get(student)
    size = list(args.input_size) if args.input_size else list(arch.input_size) if arch and arch.input_size else None
    flags = [f"data.train={args.data}", f"output_dir={Path(args.output) / task}",
             "optim.layer_decay_rate=1.0", "optim.warmup_iters=100"]
    pairs = (("data.val", args.val), ("num_iters", args.iters), ("data.batch_size", args.batch_size),
             ("optim.lr", args.lr), ("device", args.device), ("distributed", args.distributed),
             ("precision", PRECISION_OF_DTYPE.get(args.dtype)), ("data.input_size", size),
             ("distill.teacher", teacher), ("distill.targets", targets))
    flags += [f"{k}={v}" for k, v in pairs if v is not None]
    if args.unlabelled:
        flags.append("distill.use_labels=false")
    if args.progress or not progress_enabled(args.progress):
        flags.append(f"progress={str(progress_enabled(args.progress)).lower()}")
    return load_config(task, student, args.config, flags + list(args.overrides))


def _write_targets(args, teachers: dict[str, str]) -> int:
    import torch
    from sapiens2.runtime import resolve_device
    from sapiens2.training.distill.data import DistillDataset
    from sapiens2.training.distill.targets import write_teacher_targets
    from sapiens2.training.distill.teacher import Teacher
    device = resolve_device(args.device or "auto")
    for task, source in teachers.items():
        teacher = Teacher(source, task, device)
        data = DistillDataset(task, args.data, teacher_hw=teacher.input_hw, student_hw=teacher.input_hw,
                              train=False, use_labels=False, with_keys=True)
        with torch.inference_mode():
            n = write_teacher_targets(teacher, data, args.write_targets, progress=progress_enabled(args.progress))
        print(f"{task}: {n} teacher outputs -> {args.write_targets}/{task}/")
    return 0


def run(args: argparse.Namespace) -> int:
    import yaml

    from sapiens2.errors import Sapiens2Error, UsageError
    from sapiens2.training.config import config_to_dict

    try:
        teachers = _per_task(args.teacher, "--teacher", ())
        if any("=" not in t for t in args.teacher):
            raise ValueError("--teacher takes TASK=NAME|PATH, e.g. --teacher pose=sapiens2-pose-1b")
        if args.write_targets:
            if not teachers:
                raise ValueError("--write-targets needs --teacher TASK=NAME|PATH")
            return _write_targets(args, teachers)
        if not args.output:
            raise ValueError("-o RUN is required: the run folder (one sub-folder per task)")
        targets = _per_task(args.targets, "--targets", TASKS)
        tasks = [t for t in TASKS if t in teachers or t in targets]
        if not tasks:
            raise ValueError("nothing to distil from: give --teacher TASK=NAME|PATH or --targets DIR")
        if args.targets and not any("=" in t for t in args.targets):  # a bare DIR: the tasks it holds
            from pathlib import Path
            tasks = [t for t in tasks if t in teachers or (Path(targets[t]) / t / "manifest.json").is_file()]
            if not tasks:
                raise ValueError(f"{args.targets[0]} holds no <task>/manifest.json (write one with --write-targets)")
        both = [t for t in tasks if t in teachers and t in targets]
        if both:
            raise ValueError(f"{', '.join(both)}: give a teacher or precomputed targets, not both")
        students = _per_task(args.student, "--student", tuple(tasks))
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite contradict each other: continue the run, or replace it")
        configs = [_config(t, students.get(t, f"sapiens2_student_{t}"), args, teachers.get(t), targets.get(t))
                   for t in tasks]
    except (ValueError, FileNotFoundError) as e:
        error("distill", str(e))
        return 2
    if args.print_config:
        for config in configs:
            print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="---\n")
        return 0
    from sapiens2.training.distributed import cleanup_distributed
    from sapiens2.training.trainer import Trainer
    try:
        for config in configs:
            trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite)
            result = trainer.fit()
            if trainer.dist.is_main:
                if result.losses:
                    print(f"distilled {config.task} ({config.model}) for steps {result.start_step + 1}.."
                          f"{result.start_step + len(result.losses)}: loss {result.losses[0]:.4g} -> "
                          f"{result.losses[-1]:.4g}")
                if result.metrics:
                    from sapiens2.evaluation import format_table
                    print(format_table({k: v for k, v in result.metrics.items() if not isinstance(v, dict)},
                                       title=f"held-out metrics ({config.task})"))
                print(f"model: {config.output_dir}/model.safetensors")
    except UsageError:
        raise
    except (Sapiens2Error, ValueError, FileNotFoundError) as e:
        error("distill", str(e))
        return 2
    finally:
        cleanup_distributed()
    return 0
