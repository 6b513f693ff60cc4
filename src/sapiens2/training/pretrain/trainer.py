"""The pretraining loop, on the fine-tuning trainer's machinery (optimiser, schedule, checkpoints, distributed, logs).

One step: student forward/backward on the masked views (bf16 autocast on CUDA), gradient clipping, AdamW, lr
schedule, then the EMA teacher update with the cosine momentum. Checkpoints hold ``model.safetensors`` (the
teacher backbone as ``backbone.*``, loadable by ``load_backbone``) and ``training_state.pt`` (everything:
student, teacher, centres, optimiser, scheduler, RNG, data position), so a resumed run continues exactly.
At the end the teacher backbone is exported to ``<output_dir>/backbone.safetensors`` (official pretrain keys).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ...checkpoints.loading import load_backbone
from ...models.backbone import build_backbone
from ...runtime import autocast, autocast_dtype
from ..checkpointing import (latest_checkpoint, load_training_state, prepare_run_folder, rng_state, save_checkpoint,
                             set_rng_state)
from ..distributed import (DistInfo, all_reduce_mean, barrier, cleanup_distributed, full_model_state_dict,
                           full_optimizer_state_dict, load_full_model_state_dict, load_full_optimizer_state_dict,
                           setup_distributed, wrap_model)
from ..logging import MetricLogger
from ..optim import build_optimizer, build_scheduler
from .collate import PretrainCollate
from .config import PretrainConfig, validate_pretrain_config
from .dataset import PretrainStream
from .export import export_backbone, official_backbone_state
from .model import PretrainModel
from .monitor import CollapseGuard
from .sources import resolve_data
from .views import ViewMaker

logger = logging.getLogger(__name__)
EXPORT_FILE = "backbone.safetensors"


@dataclass
class PretrainResult:
    steps: int
    export_path: Path | None
    history: list[dict[str, float]] = field(default_factory=list)  # logged metrics (main process)
    model: PretrainModel | None = None


RUN_FILES = (EXPORT_FILE, "metrics.csv", "tb")  # a pretraining run's files besides checkpoints/


def worker_skips(steps_done: int, batch_size: int, num_workers: int) -> list[int]:
    """Samples each loader worker already delivered after ``steps_done`` batches (workers take turns)."""
    w = max(num_workers, 1)
    return [len(range(i, steps_done, w)) * batch_size for i in range(w)]


def build_pretrain_model(cfg: PretrainConfig, device: torch.device) -> PretrainModel:
    if cfg.init:
        backbone = load_backbone(cfg.init, rope_dtype=cfg.rope_dtype, img_size=cfg.views.global_size,
                                 dtype=torch.float32)
        backbone.train()
    else:
        backbone = build_backbone(cfg.arch, img_size=cfg.views.global_size, use_tokenizer=cfg.use_tokenizer,
                                  rope_dtype=cfg.rope_dtype)
    backbone.grad_checkpointing = cfg.activation_checkpointing
    if cfg.layerscale_init is not None and not cfg.init:
        # LayerScale 1e-4 makes the class token almost image-independent at first, which starves the DINO
        # loss for many steps; a larger start (MAE has none, i.e. 1) speeds up short runs from scratch.
        with torch.no_grad():
            for name, p in backbone.named_parameters():
                if name.endswith("gamma.weight"):
                    p.fill_(cfg.layerscale_init)
    objective = cfg.objective
    if objective.teacher_temp_warmup_steps < 0:
        objective = dataclasses.replace(objective, teacher_temp_warmup_steps=int(0.3 * cfg.num_steps))
    return PretrainModel(backbone, objective).to(device)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def pretrain(cfg: PretrainConfig, keep_model: bool = False, overwrite: bool = False) -> PretrainResult:
    """Run (or resume) pretraining as configured; returns the steps done, the export path and the logged history.

    ``overwrite``: with ``cfg.resume`` off, delete an earlier run in ``output_dir`` (otherwise refused: its
    checkpoints would stay beside the new ones and a later resume could continue the wrong run)."""
    validate_pretrain_config(cfg)
    info: DistInfo = setup_distributed(cfg.device)
    try:
        prepare_run_folder(cfg.output_dir, resume=cfg.resume, overwrite=overwrite, run_files=RUN_FILES,
                           is_main=info.is_main)
        barrier()
        return _run(cfg, info, keep_model)
    finally:
        cleanup_distributed()


def _run(cfg: PretrainConfig, info: DistInfo, keep_model: bool) -> PretrainResult:
    out_dir = Path(cfg.output_dir)
    device = info.device
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    source = resolve_data(cfg.data)
    model = build_pretrain_model(cfg, device)
    model.train()
    amp = autocast_dtype(cfg.precision, device)
    student = wrap_model(model.student, cfg.distributed, info, param_dtype=amp)
    if info.enabled and cfg.distributed == "fsdp":
        wrap_model(model.teacher, "fsdp", info, param_dtype=amp)  # sharded like the student, so EMA is local
    depth = model.student.backbone.arch.depth
    optimizer = build_optimizer(model.student, cfg.optim, depth)
    scheduler = build_scheduler(optimizer, cfg.num_steps, cfg.optim)

    start = 0
    ckpt = latest_checkpoint(out_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_training_state(ckpt)
        load_full_model_state_dict(model, state["model"])
        load_full_optimizer_state_dict(model.student, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        if info.is_main:
            logger.info("resumed from %s at step %d", ckpt, start)

    stream = PretrainStream(source, ViewMaker(cfg.views), seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    stream.set_skip_per_worker(worker_skips(start, cfg.batch_size, cfg.num_workers))
    loader = DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                        collate_fn=PretrainCollate(cfg.mask, model.patch_size), pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    metrics_log = MetricLogger(out_dir, cfg.logger, enabled=info.is_main, resume_step=start if ckpt else None)
    guard = CollapseGuard(grace_steps=cfg.collapse_grace_steps)
    history: list[dict[str, float]] = []
    progress = None
    if cfg.progress and info.is_main:
        from tqdm import tqdm
        progress = tqdm(total=cfg.num_steps, initial=start, desc="pretrain", unit="step")

    batches = iter(loader)
    tic = time.perf_counter()
    for step in range(start, cfg.num_steps):
        batch = _to_device(next(batches), device)
        with autocast(device, amp):
            loss, metrics = model(batch, step, student=student)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"pretraining loss is {float(loss)} at step {step}; lower optim.lr or check data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.clip_grad:
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.student.parameters(), cfg.optim.clip_grad))
        optimizer.step()
        scheduler.step()
        momentum = model.momentum(step, cfg.num_steps)
        model.update_teacher(momentum)
        done = step + 1

        metrics.update(lr=optimizer.param_groups[0]["lr"], momentum=momentum)
        if done % cfg.log_every == 0 or done == cfg.num_steps:
            metrics["loss"] = float(all_reduce_mean(loss.detach().float()))
            metrics["step_time"] = (time.perf_counter() - tic) / cfg.log_every
            tic = time.perf_counter()
            metrics_log.log(done, metrics)
            if info.is_main:
                guard.check(done, metrics)
                history.append({"step": done, **metrics})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", mae=f"{metrics['loss_mae']:.3f}")
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.num_steps:
            _save(cfg, info, model, optimizer, scheduler, done)

    if progress is not None:
        progress.close()
    metrics_log.close()
    export_path = out_dir / EXPORT_FILE
    export_backbone(model, export_path, which="teacher")
    barrier()
    return PretrainResult(cfg.num_steps, export_path if info.is_main else None, history, model if keep_model else None)


def _save(cfg: PretrainConfig, info: DistInfo, model: PretrainModel, optimizer, scheduler, step: int) -> None:
    # Collective under FSDP: every rank gathers, the main one writes.
    model_state = full_model_state_dict(model)
    optim_state = full_optimizer_state_dict(model.student, optimizer)
    teacher_backbone = official_backbone_state(model.teacher.backbone)
    if info.is_main:
        save_checkpoint(cfg.output_dir, step, {f"backbone.{k}": v for k, v in teacher_backbone.items()},
                        {"model": model_state, "optimizer": optim_state, "scheduler": scheduler.state_dict(),
                         "rng": rng_state(), "step": step, "config": cfg.to_dict()},
                        metadata={"arch": model.student.backbone.arch.name, "kind": "pretrain"},
                        keep_last=cfg.keep_last)
    barrier()
