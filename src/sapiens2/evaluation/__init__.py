"""Evaluation metrics per task as streaming accumulators (``update(...)`` per batch, ``compute() -> dict``), plus a
table/JSON report. Inputs are NumPy arrays, images channels-last. Rates are percentages; ``metric_units`` names
each key's unit (the table and ``eval_*.json`` carry them).

- pose: :class:`PoseMetrics` (COCO OKS AP/AR in percent via pycocotools with the 308 sigmas; needs the ``eval`` extra)
- seg: :class:`SegMetrics` (per-class IoU/Acc/Dice, mIoU, mAcc, aAcc; percent)
- normal: :class:`NormalMetrics` (angular error mean/median/RMSE, % within 5/11.25/22.5/30 degrees)
- pointmap: :class:`PointmapMetrics` (metres: point L1/distance/RMSE, % within 5/10/20 cm; depth AbsRel, delta)
- albedo: :class:`AlbedoMetrics` (MAE/L1, RMSE, PSNR, gradient L1, SSIM)
"""
from .albedo import AlbedoMetrics, psnr
from .normal import NormalMetrics, angular_error_deg
from .pointmap import PointmapMetrics
from .pose import PoseMetrics, keypoint_groups, oks_nms
from .report import format_table, metric_unit, metric_units, save_json, to_jsonable
from .seg import SegMetrics

METRICS = {"pose": PoseMetrics, "seg": SegMetrics, "normal": NormalMetrics, "pointmap": PointmapMetrics,
           "albedo": AlbedoMetrics}

__all__ = ["AlbedoMetrics", "NormalMetrics", "PointmapMetrics", "PoseMetrics", "SegMetrics", "METRICS",
           "angular_error_deg", "format_table", "keypoint_groups", "metric_unit", "metric_units", "oks_nms", "psnr",
           "save_json", "to_jsonable"]
