"""The pretraining model: student (backbone + patch decoder + projection heads), EMA teacher, and the objective.

Per step, for V global views (each with its own mask, made by the collate) and L optional local views:
- student: the masked global views through the backbone with only their visible tokens (``keep``), then the
  decoder to every grid place; local views (small) go through unmasked.
- MAE loss: decoder pixels vs per-patch normalised target pixels at the masked places.
- DINO loss: student class-token logits of each view vs the teacher's centred/sharpened distribution of the
  OTHER global views (the teacher sees the global views unmasked).
- iBOT loss: at each masked place, a projection of the decoder token (decoder width -> backbone width, then
  the iBOT head) vs the teacher's distribution for its own patch token at that place of the same view.
Total = ``mae_weight * mae + dino_weight * dino + ibot_weight * ibot``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...models.arch import NUM_PREFIX_TOKENS
from ...models.backbone import Sapiens2Backbone
from .decoder import PatchDecoder
from .ema import cosine_momentum, ema_update
from .heads import ProjectionHead
from .losses import DINOClassLoss, IBOTPatchLoss, mae_pixel_loss, teacher_temperature
from .monitor import embedding_spread, teacher_entropies


@dataclass
class ObjectiveConfig:
    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 16
    head_out_dim: int = 65536  # prototypes (DINOv2)
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    teacher_temp_start: float = 0.04
    teacher_temp_warmup_steps: int = -1  # -1: 30% of the run (DINOv2: 30 of 100 epochs)
    center_momentum: float = 0.9
    momentum_base: float = 0.994
    momentum_final: float = 1.0
    norm_pix_loss: bool = True
    mae_weight: float = 1.0
    dino_weight: float = 1.0
    ibot_weight: float = 1.0


class PretrainStudent(nn.Module):
    """The trainable half; DDP/FSDP wrap this module."""

    def __init__(self, backbone: Sapiens2Backbone, cfg: ObjectiveConfig):
        super().__init__()
        self.backbone = backbone
        c = backbone.embed_dim
        self.decoder = PatchDecoder(c, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads)
        self.dense_proj = nn.Linear(cfg.decoder_dim, c)  # decoder token -> backbone token space
        head = dict(out_dim=cfg.head_out_dim, hidden_dim=cfg.head_hidden_dim, bottleneck_dim=cfg.head_bottleneck_dim,
                    num_layers=cfg.head_layers)
        self.dino_head = ProjectionHead(c, **head)
        self.ibot_head = ProjectionHead(c, **head)

    def forward(self, globals_: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor,
                locals_: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``globals_`` (V, B, 3, H, W), ``keep`` (V, B, K), ``masked`` (V, B, M), ``locals_`` (L, B, 3, h, w)."""
        v, b = globals_.shape[:2]
        x = globals_.flatten(0, 1)
        keep, masked = keep.flatten(0, 1), masked.flatten(0, 1)
        grid = self.backbone.grid_size(x.shape[-2], x.shape[-1])
        enc = self.backbone.forward_tokens(x, keep=keep)
        dec = self.decoder(enc, keep, grid)
        tokens_at_masked = dec["tokens"].gather(1, masked[:, :, None].expand(-1, -1, dec["tokens"].shape[-1]))
        out = {"cls": enc[:, 0], "cls_logits": self.dino_head(enc[:, 0]), "pixels": dec["pixels"],
               "patch_logits": self.ibot_head(self.dense_proj(tokens_at_masked))}
        if locals_ is not None and locals_.shape[0] > 0:
            loc = self.backbone.forward_tokens(locals_.flatten(0, 1))
            out["local_cls_logits"] = self.dino_head(loc[:, 0])
        return out


class PretrainTeacher(nn.Module):
    """The EMA half: backbone and both heads, parameter names matching the student's."""

    def __init__(self, student: PretrainStudent):
        super().__init__()
        self.backbone = copy.deepcopy(student.backbone)
        self.dino_head = copy.deepcopy(student.dino_head)
        self.ibot_head = copy.deepcopy(student.ibot_head)
        self.backbone.grad_checkpointing = False
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PretrainTeacher":  # always eval: the teacher has no train mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, globals_: torch.Tensor, masked: torch.Tensor) -> dict[str, torch.Tensor]:
        x = globals_.flatten(0, 1)
        masked = masked.flatten(0, 1)
        tokens = self.backbone.forward_tokens(x)
        patches = tokens[:, NUM_PREFIX_TOKENS:]
        at_masked = patches.gather(1, masked[:, :, None].expand(-1, -1, patches.shape[-1]))
        return {"cls_logits": self.dino_head(tokens[:, 0]), "patch_logits": self.ibot_head(at_masked)}


class PretrainModel(nn.Module):
    """Student, teacher and loss state (the centres) in one module, so one state dict resumes everything."""

    def __init__(self, backbone: Sapiens2Backbone, cfg: ObjectiveConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ObjectiveConfig()
        self.student = PretrainStudent(backbone, cfg)
        self.teacher = PretrainTeacher(self.student)
        self.dino_loss = DINOClassLoss(cfg.head_out_dim, cfg.student_temp, cfg.center_momentum)
        self.ibot_loss = IBOTPatchLoss(cfg.head_out_dim, cfg.student_temp, cfg.center_momentum)

    @property
    def patch_size(self) -> int:
        return self.student.backbone.patch_size

    def teacher_temp(self, step: int) -> float:
        c = self.cfg
        return teacher_temperature(step, c.teacher_temp_warmup_steps, c.teacher_temp_start, c.teacher_temp)

    def forward(self, batch: dict[str, torch.Tensor], step: int = 0,
                student: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and metrics for one collated batch (see ``collate.py``); ``student`` is the DDP/FSDP-wrapped
        student when distributed (defaults to ``self.student``). Updates the loss centres."""
        c = self.cfg
        student = student if student is not None else self.student
        g, keep, masked = batch["globals"], batch["keep"], batch["masked"]
        v, b = g.shape[:2]
        s = student(g, keep, masked, batch.get("locals"))
        t = self.teacher(g, masked)
        temp = self.teacher_temp(step)

        mae = mae_pixel_loss(s["pixels"], g.flatten(0, 1), masked.flatten(0, 1), self.patch_size, c.norm_pix_loss)
        t_cls = t["cls_logits"].float().chunk(v)
        t_probs = [self.dino_loss.teacher_probs(x, temp) for x in t_cls]
        s_cls = list(s["cls_logits"].chunk(v))
        if "local_cls_logits" in s:
            s_cls += list(s["local_cls_logits"].chunk(s["local_cls_logits"].shape[0] // b))
        dino = self.dino_loss(s_cls, t_probs)
        ibot = self.ibot_loss(s["patch_logits"], self.ibot_loss.teacher_probs(t["patch_logits"], temp))
        total = c.mae_weight * mae + c.dino_weight * dino + c.ibot_weight * ibot

        self.dino_loss.update_center(list(t_cls))
        self.ibot_loss.update_center([t["patch_logits"]])
        ent, batch_ent = teacher_entropies(torch.cat(t_probs))
        metrics = {"loss": float(total.detach()), "loss_mae": float(mae.detach()), "loss_dino": float(dino.detach()),
                   "loss_ibot": float(ibot.detach()), "teacher_temp": temp, "teacher_entropy": ent,
                   "teacher_batch_entropy": batch_ent, "student_spread": embedding_spread(s["cls"])}
        return total, metrics

    def momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(step, total_steps, self.cfg.momentum_base, self.cfg.momentum_final)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        ema_update(self.teacher, self.student, momentum)
