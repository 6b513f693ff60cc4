"""Person boxes from an RT-DETR detector (Hugging Face transformers layout): the pre- and post-processing in NumPy.

The network itself is a callable the caller supplies (``forward(pixels) -> (logits, pred_boxes)``; the inference
layer wraps the transformers model), so this module loads nothing and needs neither torch nor torchvision.

What is mirrored from transformers' ``RTDetrImageProcessor`` (read from the model's ``preprocessor_config.json``):
- pre-processing: resize to ``size`` {height, width} without keeping the aspect ratio (a stretch), ``rescale_factor``
  (1/255), and ``image_mean`` / ``image_std`` when ``do_normalize``; RGB, (1, 3, H, W) float32. The resize is
  OpenCV's (area filter when shrinking, bilinear when enlarging) where transformers uses PIL's antialiased bilinear:
  the pixels differ by rounding, not by layout.
- post-processing (``post_process_object_detection`` with ``use_focal_loss``): scores are the sigmoid of the
  logits; of the (query, class) pairs the ``num_queries`` best are kept; a pair is a person when its class is the
  person label; boxes are (cx, cy, w, h) relative to the network input, which is the whole image stretched, so
  they scale to the image by its width and height. Then, as every detector here: boxes clipped to the image,
  scores > threshold, optional NMS.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from sapiens2.tasks.detection.boxes import DetectionError, Detections, check_rgb_image, select_detections

__all__ = ["DetrPreprocess", "RtDetrPersonDetector", "decode_rtdetr_persons", "person_label_id", "rtdetr_pixels"]

log = logging.getLogger(__name__)

#: ``forward(pixels (1, 3, H, W) float32) -> (logits (1, Q, C), pred_boxes (1, Q, 4) cx, cy, w, h in 0..1)``
DetrForward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DetrPreprocess:
    """The network input: ``size`` (H, W) the image is stretched to, then ``* rescale``, then ``(x - mean) / std``
    (per RGB channel) when ``mean`` is given."""

    size: tuple[int, int] = (640, 640)
    rescale: float = 1.0 / 255.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @classmethod
    def from_config(cls, config: Mapping) -> DetrPreprocess:
        """From a ``preprocessor_config.json`` (RTDetrImageProcessor fields); settings this adapter does not
        reproduce (padding, aspect-keeping sizes, no resize) are refused by name rather than run wrong."""
        size = config.get("size") or {"height": 640, "width": 640}
        if not config.get("do_resize", True) or not (isinstance(size, Mapping) and {"height", "width"} <= set(size)):
            raise DetectionError(f"unsupported detector pre-processing: size {size!r} with do_resize "
                                 f"{config.get('do_resize', True)}; this adapter stretches to a fixed "
                                 "{height, width} as RT-DETR's processor does")
        if config.get("do_pad", False):
            raise DetectionError("unsupported detector pre-processing: do_pad is true (RT-DETR's processor does "
                                 "not pad)")
        rescale = float(config.get("rescale_factor", 1.0 / 255.0)) if config.get("do_rescale", True) else 1.0
        mean = std = None
        if config.get("do_normalize", False):
            mean = tuple(float(v) for v in config.get("image_mean", (0.485, 0.456, 0.406)))
            std = tuple(float(v) for v in config.get("image_std", (0.229, 0.224, 0.225)))
            if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
                raise DetectionError(f"image_mean / image_std must be 3 numbers (std > 0), got {mean} / {std}")
        height, width = int(size["height"]), int(size["width"])
        if height < 1 or width < 1:
            raise DetectionError(f"detector input size must be positive, got {height}x{width}")
        return cls((height, width), rescale, mean, std)


def rtdetr_pixels(image_rgb: np.ndarray, pre: DetrPreprocess) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the network input (1, 3, h, w) float32."""
    image = check_rgb_image(image_rgb)
    h, w = pre.size
    if image.shape[:2] != (h, w):
        shrink = h < image.shape[0] or w < image.shape[1]
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = image.astype(np.float32) * np.float32(pre.rescale)
    if pre.mean is not None:
        x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))  # no overflow for large negative logits


def decode_rtdetr_persons(logits: np.ndarray, pred_boxes: np.ndarray, image_hw: tuple[int, int],
                          person_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs of one image -> person boxes (xyxy, image pixels, clipped) and their scores, before any
    threshold; the rule of transformers' ``post_process_object_detection`` (focal loss) for the person class."""
    lg = np.asarray(logits, np.float32)
    bx = np.asarray(pred_boxes, np.float32)
    lg = lg[0] if lg.ndim == 3 else lg
    bx = bx[0] if bx.ndim == 3 else bx
    if lg.ndim != 2 or bx.ndim != 2 or bx.shape[1] != 4 or len(bx) != len(lg):
        raise DetectionError(f"RT-DETR outputs must be logits (1, Q, C) and pred_boxes (1, Q, 4), got "
                             f"{np.shape(logits)} and {np.shape(pred_boxes)}")
    if not 0 <= person_class < lg.shape[1]:
        raise DetectionError(f"person class {person_class} is not among the detector's {lg.shape[1]} classes")
    scores = _sigmoid(lg.astype(np.float64))
    flat = scores.reshape(-1)
    k = min(len(lg), flat.size)
    kth = np.partition(flat, flat.size - k)[flat.size - k]  # the num_queries best (query, class) pairs are kept
    person = scores[:, person_class]
    keep = person >= kth
    cx, cy, bw, bh = bx[keep].astype(np.float64).T
    h, w = image_hw
    boxes = np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    return boxes.astype(np.float32).reshape(-1, 4), person[keep].astype(np.float32)


def person_label_id(id2label: Mapping) -> int:
    """The class index named "person" in a transformers ``id2label`` (COCO detectors: 0)."""
    found = sorted(int(i) for i, name in id2label.items() if str(name).strip().lower() == "person")
    if not found:
        names = ", ".join(str(n) for _, n in sorted(id2label.items(), key=lambda kv: int(kv[0]))[:8])
        raise DetectionError(f"the detector has no 'person' class (its labels: {names}, ...); use a detector "
                             "trained with a person class, e.g. one trained on COCO")
    return found[0]


class RtDetrPersonDetector:
    """``detect(image_rgb) -> Detections`` for an RT-DETR-family detector run by ``forward``.

    ``name``: how outputs name this detector (e.g. ``rtdetr:PekingU/rtdetr_r50vd``); ``score_threshold``: keep
    sigmoid scores above it; ``nms_iou``: drop a box overlapping a better one by more than this (RT-DETR rarely
    duplicates a person; None = no NMS, exactly the transformers post-processing).
    """

    def __init__(self, forward: DetrForward, preprocess: DetrPreprocess, *, person_class: int = 0,
                 name: str = "rtdetr", score_threshold: float = 0.5, nms_iou: float | None = 0.7):
        self.forward = forward
        self.preprocess = preprocess
        self.person_class = int(person_class)
        self.name = name
        self.score_threshold = float(score_threshold)
        self.nms_iou = nms_iou

    def postprocess(self, logits: np.ndarray, pred_boxes: np.ndarray, image_hw: tuple[int, int]) -> Detections:
        boxes, scores = decode_rtdetr_persons(logits, pred_boxes, image_hw, self.person_class)
        return select_detections(boxes, scores, self.score_threshold, self.nms_iou)

    def detect(self, image_rgb: np.ndarray) -> Detections:
        image = check_rgb_image(image_rgb)
        logits, pred_boxes = self.forward(rtdetr_pixels(image, self.preprocess))
        found = self.postprocess(logits, pred_boxes, image.shape[:2])
        log.debug("%s: %d people", self.name, len(found.scores))
        return found
