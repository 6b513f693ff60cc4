"""Segmentation metrics from a streamed confusion matrix: per-class IoU / accuracy / Dice, mIoU, mAcc, aAcc."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._arrays import as_batch, check_same


class SegMetrics:
    """Accumulates a (C, C) confusion matrix over label maps; ``compute`` gives percentages (0-100).

    Per class c: IoU = TP / (TP + FP + FN), Acc = TP / (TP + FN) (recall), Dice = 2TP / (2TP + FP + FN); classes
    with an empty denominator are NaN and left out of the means (``nan_to_num`` replaces them instead: the official
    config uses 0.0). aAcc = correct / labelled pixels. Pixels labelled ``ignore_index`` are skipped; predicted ids
    outside [0, C) count as wrong (they are false negatives of the true class).
    """

    def __init__(self, num_classes: int = 29, ignore_index: int = 255, class_names: Sequence[str] | None = None,
                 nan_to_num: float | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is None and num_classes == 29:
            from ..data.specs import seg_classes
            class_names = seg_classes().names
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        self.nan_to_num = nan_to_num
        self.reset()

    def reset(self) -> None:
        # rows = ground truth, columns = prediction; the extra column collects out-of-range predictions.
        self.confusion = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def update(self, pred_labels, gt_labels) -> None:
        """pred_labels, gt_labels: (H, W) or (N, H, W) integer class ids (argmax of the logits, resized to the GT)."""
        pred = as_batch(pred_labels, "pred_labels", 2)
        gt = as_batch(gt_labels, "gt_labels", 2)
        check_same(pred, gt, "pred_labels and gt_labels")
        if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer)):
            raise ValueError(f"labels must be integer class ids, got {pred.dtype} and {gt.dtype}")
        c = self.num_classes
        keep = gt != self.ignore_index
        g = gt[keep].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= c):
            bad = np.unique(g[(g < 0) | (g >= c)])[:10]
            raise ValueError(f"ground truth holds class ids outside [0, {c - 1}] that are not the ignore index "
                             f"{self.ignore_index}: {bad.tolist()}")
        p = pred[keep].astype(np.int64)
        p = np.where((p < 0) | (p >= c), c, p)
        self.confusion += np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)

    def compute(self) -> dict:
        conf = self.confusion.astype(np.float64)
        tp = np.diag(conf[:, : self.num_classes])
        gt_count = conf.sum(axis=1)
        pred_count = conf[:, : self.num_classes].sum(axis=0)
        fn, fp = gt_count - tp, pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (tp + fp + fn)
            acc = tp / gt_count
            dice = 2 * tp / (2 * tp + fp + fn)
            all_acc = tp.sum() / gt_count.sum() if gt_count.sum() > 0 else np.nan
        if self.nan_to_num is not None:
            iou, acc, dice = (np.nan_to_num(x, nan=self.nan_to_num) for x in (iou, acc, dice))

        def mean(x: np.ndarray) -> float:
            return float(np.nanmean(x) * 100) if np.isfinite(x).any() else float("nan")

        return {
            "mIoU": mean(iou), "mAcc": mean(acc), "mDice": mean(dice), "aAcc": float(all_acc * 100),
            "num_pixels": int(gt_count.sum()),
            "per_class": {name: {"IoU": float(iou[i] * 100), "Acc": float(acc[i] * 100), "Dice": float(dice[i] * 100)}
                          for i, name in enumerate(self.class_names)},
        }
