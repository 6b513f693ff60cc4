"""Pose OKS AP/AR with the 308 keypoint sigmas, computed by pycocotools' ``COCOeval`` (the field's reference code).

Predictions are accumulated per image (keypoints, keypoint scores, box scores) together with COCO-style ground-truth
annotations; ``compute`` builds the COCO structures in memory and runs ``COCOeval(iouType="keypoints")`` with
``kpt_oks_sigmas`` set to the official sigmas. Instance scores and OKS-NMS follow the official evaluator.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")
_COCO_BODY = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
              "right_knee", "left_ankle", "right_ankle")
_FOOT = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # optional dependency: only evaluation needs it
        raise ImportError("pose evaluation needs pycocotools; install the 'eval' extra: "
                          "pip install 'sapiens2[eval]' (or pip install pycocotools)") from err
    return COCO, COCOeval


def keypoint_groups() -> dict[str, np.ndarray]:
    """The official part groups of the 308 keypoints (body 17, foot 6, face 238, left/right hand 20 each)."""
    from ..data.specs import keypoint_info
    names = keypoint_info().names
    index = {n: i for i, n in enumerate(names)}
    finger = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")

    def hand(side: str) -> np.ndarray:
        return np.array([i for i, n in enumerate(names) if n.startswith(side + "_") and any(f in n for f in finger)])

    return {"body": np.array([index[n] for n in _COCO_BODY]), "foot": np.array([index[n] for n in _FOOT]),
            "face": np.arange(index["center_of_glabella"], len(names)),
            "left_hand": hand("left"), "right_hand": hand("right")}


def oks_matrix(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS between every pair of instances of ``a`` (M, K, 2) and ``b`` (N, K, 2), scale = mean of their areas (the
    official OKS-NMS definition)."""
    var = (2 * sigmas) ** 2
    d2 = ((a[:, None] - b[None]) ** 2).sum(-1)  # (M, N, K)
    scale = (area_a[:, None] + area_b[None]) / 2 + np.spacing(1)
    return np.exp(-d2 / var / scale[..., None] / 2).mean(-1)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, sigmas: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy OKS non-maximum suppression (highest score first, drop OKS > threshold)."""
    if len(keypoints) == 0:
        return np.zeros(0, np.int64)
    span = keypoints.max(axis=1) - keypoints.min(axis=1)
    areas = span[:, 0] * span[:, 1]
    oks = oks_matrix(keypoints, keypoints, areas, areas, sigmas)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        order = order[1:][oks[i, order[1:]] <= threshold]
    return np.array(keep, np.int64)


class PoseMetrics:
    """Streams per-image predictions and COCO-style ground truth; ``compute`` returns COCO keypoint AP/AR (0-1).

    score_mode: "bbox_keypoint" (official: box score x mean of the keypoint scores above ``keypoint_score_thr``),
    "bbox" or "keypoint". nms_threshold: OKS-NMS per image (official 0.9; None = off). groups: also report AP/AR
    per part group (``body_AP``, ...), each evaluated on its own keypoints and sigmas as the official evaluator.
    """

    def __init__(self, sigmas: Sequence[float] | None = None, score_mode: str = "bbox_keypoint",
                 keypoint_score_thr: float = 0.2, nms_threshold: float | None = 0.9, groups: bool = False):
        if score_mode not in ("bbox_keypoint", "bbox", "keypoint"):
            raise ValueError(f"score_mode must be 'bbox_keypoint', 'bbox' or 'keypoint', got {score_mode!r}")
        if sigmas is None:
            from ..data.specs import keypoint_info
            sigmas = keypoint_info().sigmas
        self.sigmas = np.asarray(sigmas, np.float64)
        self.num_keypoints = len(self.sigmas)
        self.score_mode = score_mode
        self.keypoint_score_thr = keypoint_score_thr
        self.nms_threshold = nms_threshold
        self.groups = keypoint_groups() if groups else {}
        if groups and self.num_keypoints != 308:
            raise ValueError("groups=True needs the 308 official keypoints")
        self.reset()

    def reset(self) -> None:
        self._images: list[int] = []
        self._gts: list[dict[str, Any]] = []
        self._dts: list[dict[str, Any]] = []

    # -- input ---------------------------------------------------------------------------------------------------
    def update(self, prediction: Any, ground_truth: Sequence[Mapping[str, Any]], image_id: int | None = None) -> int:
        """Add one image. Returns its image id.

        prediction: a ``PoseResult`` or a mapping with ``keypoints`` (P, K, 2) image pixels, ``scores`` (P, K)
        keypoint scores (or ``keypoint_scores``) and optional ``box_scores`` (P,) (default 1).
        ground_truth: COCO annotations of the image: ``keypoints`` (K*3 flat or (K, 3): x, y, v with v > 0 =
        labelled), ``bbox`` [x, y, w, h] (default: box of the labelled keypoints), ``area`` (default: bbox w*h),
        ``iscrowd`` (default 0), ``num_keypoints`` (default: number labelled; 0 makes the instance ignored).
        """
        if image_id is None:
            image_id = (max(self._images) + 1) if self._images else 1
        image_id = int(image_id)
        if image_id in self._images:
            raise ValueError(f"image_id {image_id} was already added")
        self._images.append(image_id)
        for ann in ground_truth:
            self._gts.append(self._gt_annotation(ann, image_id, len(self._gts) + 1))
        self._dts.extend(self._detections(prediction, image_id))
        return image_id

    def _gt_annotation(self, ann: Mapping[str, Any], image_id: int, ann_id: int) -> dict[str, Any]:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1)
        if kp.size != 3 * self.num_keypoints:
            raise ValueError(f"ground-truth keypoints must hold {self.num_keypoints} (x, y, v) triplets, "
                             f"got {kp.size} values")
        xyv = kp.reshape(-1, 3)
        labelled = xyv[:, 2] > 0
        if "bbox" in ann:
            bbox = [float(v) for v in ann["bbox"]]
        elif labelled.any():
            lo, hi = xyv[labelled, :2].min(0), xyv[labelled, :2].max(0)
            bbox = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        if len(bbox) != 4:
            raise ValueError(f"ground-truth bbox must be [x, y, w, h], got {ann['bbox']!r}")
        area = float(ann.get("area", bbox[2] * bbox[3]))
        return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kp.tolist(), "bbox": bbox,
                "area": area, "iscrowd": int(ann.get("iscrowd", 0)),
                "num_keypoints": int(ann.get("num_keypoints", int(labelled.sum())))}

    def _detections(self, prediction: Any, image_id: int) -> list[dict[str, Any]]:
        get = prediction.get if isinstance(prediction, Mapping) else lambda k, d=None: getattr(prediction, k, d)
        keypoints = np.asarray(get("keypoints"), np.float64)
        scores = get("scores")
        scores = get("keypoint_scores") if scores is None else scores
        if keypoints.ndim == 2:
            keypoints = keypoints[None]
        p = len(keypoints)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(f"predicted keypoints must be (P, {self.num_keypoints}, 2), got {keypoints.shape}")
        scores = np.ones((p, self.num_keypoints)) if scores is None else np.asarray(scores, np.float64)
        if scores.ndim == 1:
            scores = scores[None]
        box_scores = get("box_scores")
        box_scores = np.ones(p) if box_scores is None else np.asarray(box_scores, np.float64).reshape(p)
        if scores.shape != (p, self.num_keypoints):
            raise ValueError(f"keypoint scores must be (P, {self.num_keypoints}), got {scores.shape}")
        instance_scores = self._instance_scores(scores, box_scores)
        keep = np.arange(p)
        if self.nms_threshold is not None:
            keep = oks_nms(keypoints, instance_scores, self.sigmas, self.nms_threshold)
        return [{"image_id": image_id, "category_id": 1, "keypoints_xy": keypoints[i], "keypoint_scores": scores[i],
                 "score": float(instance_scores[i])} for i in keep]

    def _instance_scores(self, scores: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
        if self.score_mode == "bbox":
            return box_scores
        confident = scores > self.keypoint_score_thr
        mean = np.where(confident, scores, 0).sum(1) / np.maximum(confident.sum(1), 1)
        return mean if self.score_mode == "keypoint" else box_scores * mean

    # -- evaluation ----------------------------------------------------------------------------------------------
    def compute(self) -> dict:
        """COCO stats (AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L) in percent; NaN where undefined (no
        ground truth). With ``groups``, the same per part group, prefixed (``face_AP``, ...)."""
        out = self._evaluate(np.arange(self.num_keypoints), "")
        for name, idx in self.groups.items():
            out.update(self._evaluate(idx, f"{name}_"))
        out["num_images"] = len(self._images)
        out["num_instances"] = sum(1 for g in self._gts if g["num_keypoints"] > 0 and not g["iscrowd"])
        return out

    def _evaluate(self, idx: np.ndarray, prefix: str) -> dict:
        COCO, COCOeval = _pycocotools()
        k = len(idx)
        gts = []
        for g in self._gts:
            xyv = np.asarray(g["keypoints"]).reshape(-1, 3)[idx]
            gts.append({**g, "keypoints": xyv.reshape(-1).tolist(), "num_keypoints": int((xyv[:, 2] > 0).sum())
                        if prefix else g["num_keypoints"]})
        dts = [{"image_id": d["image_id"], "category_id": 1, "score": d["score"],
                "keypoints": np.concatenate([d["keypoints_xy"][idx], d["keypoint_scores"][idx, None]], 1)
                .reshape(-1).tolist()} for d in self._dts]
        if not self._images or not gts:
            return {prefix + s: float("nan") for s in STAT_NAMES}
        if not dts:  # COCO's loadRes cannot take an empty list; nothing detected means AP = AR = 0.
            return {prefix + s: 0.0 for s in STAT_NAMES}
        dataset = {"images": [{"id": i} for i in self._images], "annotations": gts,
                   "categories": [{"id": 1, "name": "person", "keypoints": [str(i) for i in range(k)],
                                   "skeleton": []}]}
        log = io.StringIO()
        with contextlib.redirect_stdout(log):  # pycocotools prints progress; keep library output in logging
            coco_gt = COCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dts)
            evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
            evaluator.params.kpt_oks_sigmas = self.sigmas[idx]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        logger.debug("COCOeval (%s keypoints):\n%s", k, log.getvalue())
        # percent, like every rate sapiens2 reports (COCOeval gives fractions)
        return {prefix + s: (100.0 * float(v) if v >= 0 else float("nan")) for s, v in zip(STAT_NAMES, evaluator.stats)}
