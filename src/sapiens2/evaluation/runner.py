"""Run a task model over an evaluation dataset and accumulate the task's metrics.

- pose: each ground-truth box is cropped (no augmentation), heatmaps are decoded (UDP + DARK-UDP), optionally
  averaged with the flipped crop's, mapped back to the image and scored with COCO OKS AP (``PoseMetrics``).
- seg: argmax of the logits at the label size -> ``SegMetrics``.
- normal / albedo: the raw output against the target inside the mask -> ``NormalMetrics`` / ``AlbedoMetrics``.
- pointmap: the canonical output divided by the predicted scale (metres) against the metric target ->
  ``PointmapMetrics``.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.collate import collate
from ..models.heads.task_table import resolve_task
from ..runtime import autocast as runtime_autocast
from . import METRICS

logger = logging.getLogger(__name__)

__all__ = ["evaluate", "make_metric", "predict_batch"]


def make_metric(task: str):
    task = resolve_task(task)  # names and aliases of the task table, its error for the rest
    if task not in EVALUATIONS:
        raise ValueError(f"no metrics for task {task!r}; tasks: {', '.join(EVALUATIONS)}")
    return EVALUATIONS[task].make_metric()


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def predict_batch(model: nn.Module, images: torch.Tensor, autocast: torch.dtype | None = None,
                  flip_test: bool = False):
    """Model outputs in float32 (pose heatmaps with the official flip test when asked)."""
    with runtime_autocast(images.device, autocast):
        out = model(images)
        if flip_test:
            from ..tasks.pose.flip import flip_test_average
            out = flip_test_average(out.float(), model(images.flip(-1)).float())
    if isinstance(out, (tuple, list)):
        return tuple(o.float() for o in out)
    return out.float()


def evaluate(model: nn.Module, dataset, *, batch_size: int = 4, device: torch.device | str | None = None,
             autocast: torch.dtype | None = None, flip_test: bool = False, num_workers: int = 0,
             progress: bool = False, pck_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2)) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (a :class:`TopDownPoseDataset` or :class:`DenseDataset` built with
    ``recipe=None``). The model is run in whatever mode it is in (call ``.eval()`` first).

    Rates are percentages (:func:`sapiens2.evaluation.metric_units` names every key's unit).
    Pose adds to the COCO OKS AP/AR ``PCK@t``: the % of labelled keypoints within ``t`` x the longer side
    of the ground-truth box (finer-grained than AP, which needs all 308 points right at once), and
    ``mean_error_box``, the mean keypoint distance in units of that side.
    """
    task = dataset.task
    if task == "pose" and getattr(dataset, "recipe", None) is not None:
        raise ValueError("evaluate needs the deterministic eval crops: build the pose dataset with recipe=None")
    if task != "pose" and getattr(dataset, "recipe", None) is not None:
        raise ValueError("evaluate needs the deterministic eval resize: build the dataset with recipe=None")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    metric = make_metric(task)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    if progress:
        from tqdm import tqdm
        loader = tqdm(loader, desc=f"eval {task}", unit="batch")
    run = _EvalRun(task, dataset, metric)
    entry = EVALUATIONS[task]
    for batch in loader:
        images = batch["image"].to(device)
        out = predict_batch(model, images, autocast, flip_test and task == "pose")
        entry.update(run, out, batch)
    if run.clamped:  # once per evaluation, not once per batch
        logger.warning("the model predicted a non-positive pointmap scale for %d of %d images; clamped to 1e-6",
                       run.clamped, len(dataset))
    if task == "pose":
        return _pose_metrics(metric, run.per_image, dataset, pck_thresholds)
    return metric.compute()


@dataclass
class _EvalRun:
    """What one evaluation accumulates besides its metric: pose predictions per image, clamped pointmap scales."""

    task: str
    dataset: Any
    metric: Any
    per_image: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=lambda: defaultdict(list))
    clamped: int = 0


def _update_pose(run: _EvalRun, heatmaps: torch.Tensor, batch: dict[str, Any]) -> None:
    _pose_update(run.per_image, heatmaps, batch, run.dataset)


def _update_seg(run: _EvalRun, logits: torch.Tensor, batch: dict[str, Any]) -> None:
    labels = batch["seg"].numpy()
    logits = logits if logits.shape[-2:] == labels.shape[-2:] else F.interpolate(
        logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    run.metric.update(logits.argmax(1).cpu().numpy(), labels)


def _update_pointmap(run: _EvalRun, out, batch: dict[str, Any]) -> None:
    points, scale = out
    gt = batch["pointmap"]
    points = _fit(points, gt)
    scale = scale.reshape(-1)
    if bool((scale <= 0).any()):  # an untrained scale head: score it as a tiny scale, not a crash
        run.clamped += int((scale <= 0).sum())
        scale = scale.clamp(min=1e-6)
    run.metric.update(_nhwc(points), _nhwc(gt), batch["mask"][:, 0].numpy(), pred_scale=scale.cpu().numpy())


def _update_masked_map(run: _EvalRun, out: torch.Tensor, batch: dict[str, Any]) -> None:
    gt = batch[run.task]  # the map under the task's own key (normal, albedo)
    run.metric.update(_nhwc(_fit(out, gt)), _nhwc(gt), batch["mask"][:, 0].numpy())


@dataclass(frozen=True)
class TaskEvaluation:
    """The evaluation layer's part of a task's entry: its metric and how one batch of outputs updates it."""

    make_metric: Callable[[], Any]
    update: Callable[[_EvalRun, Any, dict[str, Any]], None] = _update_masked_map


# One entry per trainable task of the task table (models/heads/task_table.py); tests/test_task_table.py checks.
EVALUATIONS: dict[str, TaskEvaluation] = {
    # one prediction per ground-truth box: nothing to suppress
    "pose": TaskEvaluation(lambda: METRICS["pose"](nms_threshold=None), _update_pose),
    "seg": TaskEvaluation(METRICS["seg"], _update_seg),
    "normal": TaskEvaluation(METRICS["normal"]),
    "pointmap": TaskEvaluation(METRICS["pointmap"], _update_pointmap),
    "albedo": TaskEvaluation(METRICS["albedo"]),
}


def _pose_metrics(metric, per_image, dataset, pck_thresholds) -> dict[str, Any]:
    people = {p.ann_id: p for p in dataset.people}
    errors = []
    for image_id, preds in sorted(per_image.items()):
        gts = []
        for ann_id, kp, _ in preds:
            p = people[ann_id]
            x1, y1, x2, y2 = p.bbox_xyxy
            gts.append({"keypoints": p.keypoints, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": p.area})
            labelled = p.keypoints[:, 2] > 0
            side = max(x2 - x1, y2 - y1)
            errors.append(np.linalg.norm(kp[labelled] - p.keypoints[labelled, :2], axis=1) / side)
        metric.update({"keypoints": np.stack([k for _, k, _ in preds]), "scores": np.stack([s for _, _, s in preds])},
                      gts, image_id=image_id)
    out = metric.compute()
    err = np.concatenate(errors) if errors else np.zeros(0)
    for t in pck_thresholds:
        out[f"PCK@{t:g}"] = 100.0 * float((err < t).mean()) if err.size else float("nan")  # percent
    out["mean_error_box"] = float(err.mean()) if err.size else float("nan")
    return out


def _fit(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] == gt.shape[-2:]:
        return pred
    return F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)


def _pose_update(per_image, heatmaps: torch.Tensor, batch: dict[str, Any], dataset) -> None:
    from ..tasks.pose.codec import decode_udp_heatmaps
    from ..tasks.pose.crop import decoded_to_image
    kp, scores = decode_udp_heatmaps(heatmaps.cpu().numpy(), dataset.input_wh)
    image_kp = decoded_to_image(kp, batch["center"].numpy(), batch["size"].numpy(), dataset.input_wh)
    for i, (image_id, ann_id) in enumerate(zip(batch["image_id"].tolist(), batch["ann_id"].tolist())):
        per_image[int(image_id)].append((int(ann_id), image_kp[i], scores[i]))
