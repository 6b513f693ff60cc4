"""The fine-tuning loop: data, model, AdamW + schedule, mixed precision, clipping, checkpoints, evaluation, logs.

``Trainer(config).fit()`` runs in one process or under torchrun (DDP or FSDP2). Every step's loss is the mean over
all processes of the per-process mean loss, i.e. the loss of the global batch; with the same global batch and seed
a run gives the same loss curve in 1 or N processes and after a resume (data order and augmentation depend only on
the seed and the step, see ``sampling.py``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import TrainingConfigError
from ..data.collate import collate
from .datasets import build_dataset, image_ids_of
from ..models import Sapiens2TaskModel, build_model, get_arch
from ..runtime import autocast, autocast_dtype
from .checkpointing import (MODEL_FILE, latest_checkpoint, load_training_state, load_weights, prepare_run_folder,
                            rng_state, save_checkpoint, save_weights, set_rng_state)
from .config import TrainConfig, config_to_dict, validate
from .distributed import (DistInfo, all_reduce_mean, barrier, full_model_state_dict, full_optimizer_state_dict,
                          load_full_model_state_dict, load_full_optimizer_state_dict, setup_distributed,
                          unwrap_model, wrap_model)
from .logging import MetricLogger
from .optim import build_optimizer, build_scheduler
from .sampling import GlobalBatchSampler

logger = logging.getLogger(__name__)
RUN_FILES = (MODEL_FILE, "metrics.csv", "config.yaml", "tb")  # a run's files besides checkpoints/

__all__ = ["Trainer", "TrainResult", "build_training_model", "make_targets", "collate", "autocast_dtype",
           "split_datasets"]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # global-batch loss of each step run here
    terms: list[dict[str, float]] = field(default_factory=list)
    start_step: int = 0
    metrics: dict[str, Any] | None = None  # last evaluation
    output_dir: Path | None = None
    checkpoint: Path | None = None


def build_training_model(task: str, model: str, img_size: tuple[int, int], head: dict | None = None,
                         rope_dtype: str = "bf16") -> Sapiens2TaskModel:
    """A task model to fine-tune: ``model`` is an arch name (random init, e.g. ``sapiens2_tiny``), a pretrain or
    task checkpoint (published name or file; its backbone initialises ours, strictly), e.g. our own checkpoints."""
    from ..models.arch import ARCHS
    if model in ARCHS:
        return build_model(task, get_arch(model), img_size=img_size, head_config=head or None, rope_dtype=rope_dtype)
    from ..checkpoints import load_backbone
    backbone = load_backbone(model, img_size=img_size, rope_dtype=rope_dtype)
    net = build_model(task, backbone.arch, img_size=img_size, head_config=head or None, rope_dtype=rope_dtype,
                      use_tokenizer=backbone.tokenizer is not None)
    net.backbone.load_state_dict(backbone.state_dict(), strict=True)
    logger.info("initialised the %s backbone from %s", backbone.arch.name, model)
    return net


def make_targets(task: str, batch: dict[str, torch.Tensor], canonical_focal_length: float) -> dict[str, torch.Tensor]:
    """The loss's ``targets`` dict from a collated batch (already on the device): the loss table's entry says how."""
    from .losses.task_loss import LOSS_TABLE
    return LOSS_TABLE[task].targets(task, batch, canonical_focal_length)


def split_datasets(config: TrainConfig) -> tuple[list[int] | None, str | None, list[int] | None]:
    """(train image ids, val root, val image ids) from ``data.val`` / ``data.val_fraction``."""
    d = config.data
    if d.val:
        return None, d.val, None
    if d.val_fraction > 0:
        ids = image_ids_of(d.train)
        n_val = max(1, round(len(ids) * d.val_fraction))
        if n_val >= len(ids):
            raise TrainingConfigError(f"val_fraction {d.val_fraction} leaves no training image out of {len(ids)}")
        return ids[:-n_val], d.train, ids[-n_val:]
    return None, None, None


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to the device, except float64 bookkeeping (crop boxes), which MPS cannot hold."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and v.dtype != torch.float64 else v
            for k, v in batch.items()}


class Trainer:
    """Fine-tune one task model. ``resume``: True = the latest checkpoint in ``output_dir`` (if any), or a path.
    ``stop_after``: stop (as if interrupted) once this many steps are done — for tests of resuming.
    ``overwrite``: start afresh in an ``output_dir`` that holds another run, deleting it (otherwise refused)."""

    def __init__(self, config: TrainConfig, resume: bool | str | Path = False, stop_after: int | None = None,
                 dist_info: DistInfo | None = None, overwrite: bool = False):
        validate(config)
        if not config.data.train:
            raise TrainingConfigError("no training data: set data.train (sapiens2 train --data DIR)")
        self.config = config
        self.resume = resume
        self.stop_after = stop_after
        self.dist = dist_info or setup_distributed(config.device)
        self.output_dir = Path(config.output_dir)
        # before any work: a new run never shares a folder (and so a later resume) with an earlier one
        prepare_run_folder(self.output_dir, resume=bool(resume), overwrite=overwrite, run_files=RUN_FILES,
                           is_main=self.dist.is_main)
        barrier()

    # -- setup -----------------------------------------------------------------------------------------------
    def _datasets(self, distiller=None):
        c = self.config
        train_ids, val_root, val_ids = split_datasets(c)
        if distiller is not None:  # items at the teacher's size too, labels optional (training/distill/data.py)
            train = distiller.train_dataset(image_ids=train_ids)
        else:
            train = build_dataset(c.task, c.data.train, train=True, input_hw=c.data.input_size, image_ids=train_ids,
                                  seed=c.seed, augment=c.data.augment, sigma=c.data.sigma,
                                  image_root=c.data.image_root)
        val = None
        if val_root is not None:
            val = build_dataset(c.task, val_root, train=False, input_hw=c.data.input_size, image_ids=val_ids,
                                seed=c.seed, sigma=c.data.sigma,
                                image_root=c.data.image_root if val_root == c.data.train else None)
        return train, val

    def _loader(self, dataset, start_step: int) -> DataLoader:
        c = self.config
        sampler = GlobalBatchSampler(len(dataset), c.data.batch_size, c.num_iters, self.dist.rank,
                                     self.dist.world_size, c.seed, start_step)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=c.data.num_workers, collate_fn=collate,
                          pin_memory=self.dist.device.type == "cuda",
                          persistent_workers=False)

    # -- main loop -------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        c = self.config
        dev = self.dist.device
        main = self.dist.is_main
        torch.manual_seed(c.seed)  # the same initial head on every rank (FSDP does not broadcast)
        np.random.seed(c.seed)
        model = build_training_model(c.task, c.model, tuple(c.data.input_size), c.head, c.rope_dtype).to(dev)
        if c.freeze_backbone:
            model.backbone.requires_grad_(False)
        model.backbone.grad_checkpointing = c.activation_checkpointing
        model.train()
        depth = model.backbone.arch.depth
        wrapped = wrap_model(model, c.distributed, self.dist)
        optimizer = build_optimizer(unwrap_model(wrapped), c.optim, depth)
        scheduler = build_scheduler(optimizer, c.num_iters, c.optim)
        amp = autocast_dtype(c.precision, dev)
        scaler = torch.amp.GradScaler(dev.type) if amp == torch.float16 else None
        from .losses import build_task_loss
        loss_fn = build_task_loss(c.task, c.loss)
        cfl = c.data.canonical_focal_length or float(c.data.input_size[1])
        distiller = None
        if c.distill.active:  # sapiens2 distill: soft targets + the task loss where labelled, same loop
            from .distill.session import Distiller
            distiller = Distiller(c, dev, amp)
            loss_fn = distiller.loss(loss_fn)

        start_step = 0
        ckpt = self._resume_checkpoint()
        if ckpt is not None:
            start_step = self._restore(ckpt, wrapped, optimizer, scheduler, scaler)
        train_set, val_set = self._datasets(distiller)
        if main:
            logger.info("training %s on %d items (%d held out) for %d steps, global batch %d, %d process(es)",
                        c.task, len(train_set), len(val_set) if val_set is not None else 0, c.num_iters,
                        c.data.batch_size * self.dist.world_size, self.dist.world_size)
        log = MetricLogger(self.output_dir, c.logger, enabled=main, resume_step=start_step if ckpt else None)
        result = TrainResult(start_step=start_step, output_dir=self.output_dir)
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            import yaml
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(c), sort_keys=False))

        params = [p for p in wrapped.parameters() if p.requires_grad]
        bar = None
        if main and c.progress:
            from tqdm import tqdm
            bar = tqdm(total=c.num_iters, initial=start_step, desc=f"train {c.task}", unit="step")
        step = start_step
        t0 = time.perf_counter()
        try:
            for batch in self._loader(train_set, start_step):
                batch = _to_device(batch, dev)
                if distiller is not None:
                    targets = distiller.targets(batch, lambda b: make_targets(c.task, b, cfl))
                else:
                    targets = make_targets(c.task, batch, cfl)
                with autocast(dev, amp):
                    outputs = wrapped(batch["image"])
                outputs = _to_float(outputs)
                total, terms = loss_fn(outputs, targets)
                if not torch.isfinite(total):
                    raise FloatingPointError(f"loss is {total.item()} at step {step}; lower optim.lr or check the data")
                if scaler is not None:
                    scaler.scale(total).backward()
                    scaler.unscale_(optimizer)
                else:
                    total.backward()
                grad_norm = None
                if c.optim.clip_grad:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, c.optim.clip_grad)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                lr = optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("layer_scale", 1.0)
                scheduler.step()
                step += 1
                loss_value = float(all_reduce_mean(total.detach()).item())
                term_values = {k: float(all_reduce_mean(v.detach()).item()) for k, v in terms.items()}
                result.losses.append(loss_value)
                result.terms.append(term_values)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4g}")
                if main and (step % max(1, c.log_every) == 0 or step == c.num_iters):
                    values = {"train/loss": loss_value, "train/lr": lr,
                              **{f"train/{k}": v for k, v in term_values.items()}}
                    if grad_norm is not None:
                        values["train/grad_norm"] = float(_full(grad_norm))
                    values["train/steps_per_s"] = (step - start_step) / max(1e-9, time.perf_counter() - t0)
                    log.log(step, values)
                last = step == c.num_iters
                if val_set is not None and (last or (c.eval_every and step % c.eval_every == 0)):
                    result.metrics = self._evaluate(wrapped, val_set, amp)
                    if main:
                        log.log(step, {f"val/{k}": v for k, v in result.metrics.items()})
                        logger.info("step %d: %s", step, _brief(result.metrics))
                stopping = self.stop_after is not None and step >= self.stop_after
                if last or stopping or (c.save_every and step % c.save_every == 0):
                    result.checkpoint = self._save(step, wrapped, optimizer, scheduler, scaler, final=last)
                if stopping:
                    break
        finally:
            if bar is not None:
                bar.close()
            log.close()
        return result

    # -- pieces ------------------------------------------------------------------------------------------------
    def _evaluate(self, wrapped: nn.Module, val_set, amp: torch.dtype | None) -> dict[str, Any]:
        from ..evaluation.runner import evaluate
        model = unwrap_model(wrapped) if not self._is_fsdp(wrapped) else wrapped
        model.eval()
        try:
            return evaluate(model, val_set, batch_size=self.config.eval_batch_size, device=self.dist.device,
                            autocast=amp)
        finally:
            model.train()

    def _is_fsdp(self, wrapped: nn.Module) -> bool:
        return self.dist.enabled and self.config.distributed == "fsdp"

    def _resume_checkpoint(self) -> Path | None:
        if not self.resume:
            return None
        if self.resume is True:
            found = latest_checkpoint(self.output_dir)
            if found is None:
                logger.info("no checkpoint in %s: starting from scratch", self.output_dir)
            return found
        path = Path(self.resume)
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {path}")
        return path

    def _restore(self, ckpt: Path, wrapped, optimizer, scheduler, scaler) -> int:
        state = load_training_state(ckpt)
        c = self.config
        if state.get("task") != c.task:
            raise TrainingConfigError(f"{ckpt} is a {state.get('task')} checkpoint, not {c.task}")
        global_batch = c.data.batch_size * self.dist.world_size
        if state.get("global_batch") != global_batch or state.get("seed") != c.seed:
            logger.warning("resuming with global batch %d / seed %d (checkpoint: %s / %s): the data order changes",
                           global_batch, c.seed, state.get("global_batch"), state.get("seed"))
        load_full_model_state_dict(wrapped, load_weights(ckpt))
        load_full_optimizer_state_dict(wrapped, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        logger.info("resumed from %s at step %d", ckpt, state["step"])
        return int(state["step"])

    def _save(self, step: int, wrapped, optimizer, scheduler, scaler, final: bool) -> Path | None:
        c = self.config
        model_state = full_model_state_dict(wrapped)  # collective under FSDP
        optim_state = full_optimizer_state_dict(wrapped, optimizer)
        path = None
        if self.dist.is_main:
            model = unwrap_model(wrapped)
            meta = {"task": c.task, "arch": model.backbone.arch.name,
                    "img_size": "x".join(str(v) for v in c.data.input_size)}
            if c.distill.active:
                meta["distilled_from"] = str(c.distill.teacher or c.distill.targets)
            training_state = {"step": step, "task": c.task, "optimizer": optim_state,
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                              "rng": rng_state(), "seed": c.seed, "global_batch": c.data.batch_size *
                              self.dist.world_size, "config": config_to_dict(c)}
            path = save_checkpoint(self.output_dir, step, model_state, training_state, meta, c.keep_last)
            if final:
                save_weights(self.output_dir / "model.safetensors", model_state, meta)
        barrier()
        return path


def _to_float(outputs):
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(o.float() for o in outputs)
    return outputs.float()


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _brief(metrics: dict[str, Any]) -> str:
    items = [(k, v) for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)][:6]
    return ", ".join(f"{k}={v:.4g}" for k, v in items)
