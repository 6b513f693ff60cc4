"""One loss entry point per task: configs carrying the official weights, and the callable that combines the terms.

``build_task_loss(task, config)(outputs, targets) -> (total, terms)``; ``terms`` maps the official term names
(``loss_ce``, ``loss_silog``, ...) to the *weighted* scalar tensors whose sum is ``total``. Terms with weight 0 are
not computed. Dense predictions whose size differs from the targets are resized bilinearly first (as the official
heads do).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import LossInputError, TrainingConfigError
from ...models.heads.task_table import resolve_task
from ._masking import pixel_mask
from .chromaticity_l1 import chromaticity_l1
from .cosine_similarity import normal_cosine_loss
from .cross_entropy import seg_cross_entropy
from .dice import dice_loss
from .gradient import gradient_loss
from .heatmap_mse import keypoint_heatmap_mse
from .intrinsics_consistency import intrinsics_consistency_loss
from .l1 import masked_l1
from .laplacian_pyramid_l1 import laplacian_pyramid_l1
from .low_frequency_l1 import low_frequency_l1
from .matting_l1 import matting_l1
from .multiscale_l1 import multiscale_l1
from .pointmap_normal import pointmap_normal_loss
from .scale_l1 import scale_l1
from .shift_invariant_l1 import shift_invariant_l1
from .silog import silog_loss
from .sobel_gradient_l1 import sobel_gradient_l1

# Official seg config (29 body-part classes): background is down-weighted, small parts up-weighted.
OFFICIAL_SEG_CLASS_WEIGHTS: tuple[float, ...] = (
    0.1, 10, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1, 10, 10, 10, 10, 10)


@dataclass(frozen=True)
class PoseLossConfig:
    heatmap_weight: float = 10.0  # KeypointMSELoss(loss_weight=10)
    use_joint_weights: bool = True  # multiply target weights by keypoint_info().joint_weights (all 1.0 for 308)


@dataclass(frozen=True)
class SegLossConfig:
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    class_weight: tuple[float, ...] | None = OFFICIAL_SEG_CLASS_WEIGHTS  # None = unweighted CE
    ignore_index: int = 255
    dice_include_background: bool = False
    dice_eps: float = 1e-3


@dataclass(frozen=True)
class NormalLossConfig:
    cosine_weight: float = 10.0
    l1_weight: float = 1.0
    grad_weight: float = 10.0  # squared forward-difference error (official NormalGradL1Loss)


@dataclass(frozen=True)
class PointmapLossConfig:
    l1_weight: float = 2.0  # on pointmap / mean GT depth
    multiscale_l1_weight: float = 1.0
    multiscale_factor: float = 2.0
    silog_weight: float = 1.0  # on the Z channel
    intrinsics_weight: float = 1.0
    shift_invariant_weight: float = 1.0
    normal_weight: float = 2.0
    normal_l1_weight: float = 1.0  # inner weight of the L1 part of the normal term
    scale_weight: float = 4.0
    normalised_term_clamp: float = 4.0  # the depth-normalised L1 terms are clamped to this (official)


@dataclass(frozen=True)
class AlbedoLossConfig:
    l1_weight: float = 2.0
    grad_weight: float = 2.0  # squared forward-difference error, mean of the two axes (official AlbedoGradL1Loss)
    chroma_weight: float = 1.0
    low_freq_weight: float = 0.0  # present but commented out in the official config
    low_freq_down_sample: int = 32


@dataclass(frozen=True)
class MattingLossConfig:
    l1_weight: float = 1.0
    grad_weight: float = 1.0
    laplacian_weight: float = 1.0
    laplacian_levels: int = 5


LossConfig = PoseLossConfig | SegLossConfig | NormalLossConfig | PointmapLossConfig | AlbedoLossConfig | \
    MattingLossConfig


def _check_task(task: str) -> type:
    """The loss config class of a task name or alias (the task table's error for unknown names)."""
    name = resolve_task(task)
    if name not in LOSS_TABLE:
        raise TrainingConfigError(f"task {name!r} has no loss; tasks with one: {', '.join(LOSS_TABLE)}")
    return LOSS_TABLE[name].config_class


def loss_config_from_dict(task: str, values: Mapping[str, Any] | None = None) -> LossConfig:
    """The task's config with ``values`` on top of the official defaults; unknown keys are rejected."""
    cls = _check_task(task)
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        hints = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
        detail = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise TrainingConfigError(f"unknown {task} loss option(s): {detail}; valid: {sorted(names)}")
    if values.get("class_weight") is not None:
        values["class_weight"] = tuple(float(v) for v in values["class_weight"])
    return cls(**values)


def _require(targets: Mapping[str, Any], key: str, task: str) -> Tensor:
    if key not in targets or targets[key] is None:
        raise KeyError(f"{task} loss needs targets[{key!r}]; got keys {sorted(targets)}")
    return targets[key]


def _float32(x: Any) -> Any:
    return x.float() if isinstance(x, Tensor) and x.dtype in (torch.float16, torch.bfloat16) else x


def _match_size(pred: Tensor, size: torch.Size) -> Tensor:
    if pred.shape[-2:] == size:
        return pred
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def _dense_pair(pred: Tensor, targets: Mapping[str, Any], key: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """(prediction at the target's size, the target map under ``key``, the optional mask)."""
    target = _require(targets, key, key)
    return _match_size(pred, target.shape[-2:]), target, targets.get("mask")


class TaskLoss:
    """Callable ``(outputs, targets) -> (total, terms)`` for one task; see :func:`build_task_loss` for the inputs."""

    def __init__(self, task: str, config: LossConfig):
        self.task = resolve_task(task)
        self.config = config
        self._joint_weights: Tensor | None = None
        self._impl: Callable[[Any, Mapping[str, Any]], dict[str, Tensor]] = \
            functools.partial(LOSS_TABLE[self.task].terms, self)

    def __repr__(self) -> str:
        return f"TaskLoss(task={self.task!r}, config={self.config!r})"

    def __call__(self, outputs: Any, targets: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        # Losses run in float32 even when the model runs in bf16/fp16 (mask counts and sums lose precision there);
        # the cast is differentiable, so gradients reach the low-precision outputs.
        if isinstance(outputs, (tuple, list)):
            outputs = type(outputs)(_float32(o) for o in outputs)
        else:
            outputs = _float32(outputs)
        terms = self._impl(outputs, targets)
        if not terms:
            raise TrainingConfigError(f"every {self.task} loss weight is 0: nothing to optimise")
        total = sum(terms.values())
        return total, terms

    # -- tasks ---------------------------------------------------------------------------------------------------
    def _pose(self, heatmaps: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: PoseLossConfig = self.config
        target = _require(targets, "heatmaps", "pose")
        weights = targets.get("keypoint_weights")
        if weights is not None and weights.ndim == 3:  # official layout (B, 1, K)
            weights = weights.squeeze(1)
        if c.use_joint_weights:
            if self._joint_weights is None:
                from ...data.specs import keypoint_info
                self._joint_weights = torch.from_numpy(keypoint_info().joint_weights)
            jw = self._joint_weights
            if jw.numel() != heatmaps.shape[1]:
                raise LossInputError(f"use_joint_weights needs {jw.numel()} keypoint channels, got "
                                     f"{heatmaps.shape[1]}; set use_joint_weights=False for a custom keypoint set")
            jw = jw.to(device=heatmaps.device, dtype=heatmaps.dtype)
            weights = jw.expand(heatmaps.shape[:2]) if weights is None else weights.to(heatmaps.dtype) * jw
        out = {}
        if c.heatmap_weight:
            out["loss_kpt"] = c.heatmap_weight * keypoint_heatmap_mse(heatmaps, target.to(heatmaps.dtype), weights)
        return out

    def _seg(self, logits: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: SegLossConfig = self.config
        labels = _require(targets, "seg", "seg")
        if labels.ndim == 4 and labels.shape[1] == 1:
            labels = labels.squeeze(1)
        logits = _match_size(logits, labels.shape[-2:])
        out = {}
        if c.ce_weight:
            out["loss_ce"] = c.ce_weight * seg_cross_entropy(logits, labels, c.class_weight, c.ignore_index)
        if c.dice_weight:
            out["loss_dice"] = c.dice_weight * dice_loss(logits, labels, c.ignore_index, c.dice_include_background,
                                                         c.dice_eps)
        return out

    def _normal(self, pred: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: NormalLossConfig = self.config
        pred, target, mask = _dense_pair(pred, targets, "normal")
        out = {}
        if c.cosine_weight:
            out["loss_cosine_sim"] = c.cosine_weight * normal_cosine_loss(pred, target, mask)
        if c.l1_weight:
            out["loss_l1"] = c.l1_weight * masked_l1(pred, target, mask)
        if c.grad_weight:
            out["loss_grad"] = c.grad_weight * gradient_loss(pred, target, mask)
        return out

    def _pointmap(self, outputs: Any, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: PointmapLossConfig = self.config
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise LossInputError("pointmap outputs must be the head's (pointmap (B, 3, H, W), scale (B, 1)) pair")
        pred, pred_scale = outputs
        target = _require(targets, "pointmap", "pointmap")  # canonical XYZ (metric * scale)
        pred = _match_size(pred, target.shape[-2:])
        mask = pixel_mask(targets.get("mask"), pred)
        gt_scale = targets.get("scale")
        out: dict[str, Tensor] = {}

        normalised_terms = [(c.l1_weight, "loss_l1", masked_l1),
                            (c.multiscale_l1_weight, f"loss_multiscale_l1_{c.multiscale_factor:g}",
                             lambda p, t, m: multiscale_l1(p, t, m, c.multiscale_factor)),
                            (c.shift_invariant_weight, "loss_shift_invariant", shift_invariant_l1)]
        if any(w for w, _, _ in normalised_terms):
            depth = self._mean_depth(target, mask, targets.get("mean_depth"))
            pred_n, target_n = pred / depth, target / depth
            for weight, name, fn in normalised_terms:
                if weight:
                    out[name] = weight * fn(pred_n, target_n, mask).clamp(max=c.normalised_term_clamp)
        if c.silog_weight:
            out["loss_silog"] = c.silog_weight * silog_loss(pred[:, 2:3], target[:, 2:3], mask)
        if c.intrinsics_weight:
            k = _require(targets, "K", "pointmap (intrinsics consistency term)")
            out["loss_K_consistency"] = c.intrinsics_weight * intrinsics_consistency_loss(pred, k, mask)
        if c.normal_weight:
            out["loss_normal"] = c.normal_weight * pointmap_normal_loss(pred, target, mask, gt_scale,
                                                                        c.normal_l1_weight)
        if c.scale_weight:
            if gt_scale is None:
                raise KeyError("pointmap loss needs targets['scale'] (canonical_focal_length / fx) for the scale "
                               "term; set scale_weight=0 to train without it")
            out["loss_scale_l1"] = c.scale_weight * scale_l1(pred_scale, gt_scale)
        return out

    @staticmethod
    def _mean_depth(target: Tensor, mask: Tensor, given: Tensor | None) -> Tensor:
        """Per-sample mean GT Z over valid pixels, (B, 1, 1, 1); 1 where undefined (those samples are masked)."""
        if given is not None:
            depth = given.detach().to(target.dtype).reshape(-1, 1, 1, 1)
        else:
            z = torch.where(mask[:, 0] > 0, target[:, 2].detach(), torch.zeros((), dtype=target.dtype,
                                                                                 device=target.device))
            depth = (z.sum(dim=(1, 2)) / mask[:, 0].sum(dim=(1, 2)).clamp(min=1)).reshape(-1, 1, 1, 1)
        return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.ones_like(depth))

    def _albedo(self, pred: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: AlbedoLossConfig = self.config
        pred, target, mask = _dense_pair(pred, targets, "albedo")
        out = {}
        if c.l1_weight:
            out["loss_l1"] = c.l1_weight * masked_l1(pred, target, mask)
        if c.grad_weight:
            out["loss_grad"] = c.grad_weight * gradient_loss(pred, target, mask, average_axes=True)
        if c.chroma_weight:
            out["loss_chroma_l1"] = c.chroma_weight * chromaticity_l1(pred, target, mask)
        if c.low_freq_weight:
            out["loss_low_l1"] = c.low_freq_weight * low_frequency_l1(pred, target, mask, c.low_freq_down_sample)
        return out

    def _matting(self, pred: Tensor, targets: Mapping[str, Any]) -> dict[str, Tensor]:
        c: MattingLossConfig = self.config
        alpha = _require(targets, "alpha", "matting")
        if alpha.ndim == 3:
            alpha = alpha.unsqueeze(1)
        pred = _match_size(pred, alpha.shape[-2:])
        if pred.shape[1] not in (1, 4):
            raise LossInputError(f"matting outputs must be (B, 4, H, W) (fg RGB + alpha) or (B, 1, H, W), "
                             f"got {tuple(pred.shape)}")
        pairs = [("pha", pred[:, -1:], alpha, None)]
        foreground = targets.get("foreground")
        if pred.shape[1] == 4 and foreground is not None:
            # Official: the foreground terms use the sample mask (pixels with a known foreground colour).
            pairs.append(("fgr", pred[:, :3], foreground, targets.get("mask")))
        terms = [(c.l1_weight, "loss_l1", matting_l1), (c.grad_weight, "loss_grad", sobel_gradient_l1),
                 (c.laplacian_weight, "loss_lap", lambda p, t, m: laplacian_pyramid_l1(p, t, m, c.laplacian_levels))]
        out = {}
        for weight, name, fn in terms:
            if weight:
                for suffix, p, t, m in pairs:
                    out[f"{name}_{suffix}"] = weight * fn(p, t.to(p.dtype), m)
        return out


Batch = Mapping[str, Tensor]


def _pose_targets(task: str, batch: Batch, canonical_focal_length: float) -> dict[str, Tensor]:
    return {"heatmaps": batch["heatmaps"], "keypoint_weights": batch["keypoint_weights"]}


def _seg_targets(task: str, batch: Batch, canonical_focal_length: float) -> dict[str, Tensor]:
    return {"seg": batch["seg"]}


def _pointmap_targets(task: str, batch: Batch, canonical_focal_length: float) -> dict[str, Tensor]:
    from .targets import canonical_pointmap_targets
    canonical, scale = canonical_pointmap_targets(batch["pointmap"], batch["K"], canonical_focal_length)
    return {"pointmap": canonical, "scale": scale, "mask": batch["mask"], "K": batch["K"]}


def masked_map_targets(task: str, batch: Batch, canonical_focal_length: float) -> dict[str, Tensor]:
    """A dense map under the task's own key plus its mask (normal, albedo and most new dense tasks)."""
    return {task: batch[task], "mask": batch["mask"]}


@dataclass(frozen=True)
class TaskLossEntry:
    """The training layer's part of a task's entry: its loss config, the method that computes its terms and
    ``targets(task, batch, canonical_focal_length)``, the loss's targets from a collated batch."""

    config_class: type
    terms: Callable[[TaskLoss, Any, Mapping[str, Any]], dict[str, Tensor]]
    targets: Callable[[str, Batch, float], dict[str, Tensor]] = masked_map_targets


# One entry per task of the task table (models/heads/task_table.py); tests/test_task_table.py checks they match.
LOSS_TABLE: dict[str, TaskLossEntry] = {
    "pose": TaskLossEntry(PoseLossConfig, TaskLoss._pose, _pose_targets),
    "seg": TaskLossEntry(SegLossConfig, TaskLoss._seg, _seg_targets),
    "normal": TaskLossEntry(NormalLossConfig, TaskLoss._normal),
    "pointmap": TaskLossEntry(PointmapLossConfig, TaskLoss._pointmap, _pointmap_targets),
    "albedo": TaskLossEntry(AlbedoLossConfig, TaskLoss._albedo),
    "matting": TaskLossEntry(MattingLossConfig, TaskLoss._matting),
}
LOSS_CONFIGS: dict[str, type] = {task: entry.config_class for task, entry in LOSS_TABLE.items()}


def build_task_loss(task: str, config: LossConfig | Mapping[str, Any] | None = None) -> TaskLoss:
    """The loss for ``task`` (pose, seg, normal, pointmap, albedo, matting) with the official weights by default.

    ``config``: the task's ``*LossConfig``, a dict of overrides, or None. Call the result as
    ``total, terms = loss(outputs, targets)`` with

    - pose: outputs heatmaps (B, K, h, w); targets ``heatmaps`` (B, K, h, w), ``keypoint_weights`` (B, K).
    - seg: outputs logits (B, C, h, w); targets ``seg`` (B, H, W) long, 255 = no label.
    - normal: outputs (B, 3, h, w); targets ``normal`` (B, 3, H, W), ``mask`` (B, 1, H, W) optional.
    - pointmap: outputs (pointmap (B, 3, h, w), scale (B, 1)); targets ``pointmap`` canonical XYZ (metric * scale),
      ``mask``, ``scale`` (B,) = canonical_focal_length / fx, ``K`` (B, 3, 3) intrinsics of the training image,
      ``mean_depth`` (B,) optional (default: mean GT Z over the mask). See ``targets.canonical_pointmap_targets``.
    - albedo: outputs (B, 3, h, w); targets ``albedo`` (B, 3, H, W) in [0, 1], ``mask`` optional.
    - matting: outputs (B, 4, h, w) = pre-multiplied RGB + alpha; targets ``alpha`` (B, 1, H, W), ``foreground``
      (B, 3, H, W) optional, ``mask`` (B, 1, H, W) optional (applies to the foreground terms, as officially).
    """
    cls = _check_task(task)
    if config is None or isinstance(config, Mapping):
        config = loss_config_from_dict(task, config)
    elif not isinstance(config, cls):
        raise TypeError(f"the {task} loss needs a {cls.__name__}, got {type(config).__name__}")
    return TaskLoss(task, config)
