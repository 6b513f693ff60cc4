"""A person detector from an ONNX file the user supplies (``onnxruntime`` is an optional extra, imported lazily).

Supported output layouts:
- ``yolov8``: one output (1, 4 + C, N) (or its transpose (1, N, 4 + C)): cx, cy, w, h in input pixels, then C class
  scores (no objectness), as exported by Ultralytics YOLOv8/v11. A box counts as a person when the person class has
  the highest score.
- ``rtmdet``: two outputs, ``dets`` (1, N, 5) = x1, y1, x2, y2, score in input pixels and ``labels`` (1, N), as
  exported by MMDeploy for RTMDet (NMS inside the graph).
Preprocessing is a letterbox (keep aspect, pad); presets: ``yolov8`` = RGB / 255, centred pad 114; ``rtmdet`` =
BGR, mmdet mean/std, pad 114 at right/bottom. Boxes are mapped back to the image, thresholded and NMS'd (IoU 0.3).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from sapiens2.tasks.detection.boxes import (Detections, DetectionError, DetectorUnavailableError, check_rgb_image,
                                            select_detections)

__all__ = ["LetterboxConfig", "LETTERBOX_PRESETS", "letterbox", "unletterbox_boxes", "decode_yolov8",
           "decode_rtmdet", "detect_layout", "OnnxPersonDetector"]

log = logging.getLogger(__name__)
DEFAULT_INPUT_SIZE = (640, 640)


@dataclass(frozen=True)
class LetterboxConfig:
    pad_value: float = 114.0  # on the 0-255 scale, before normalisation
    center: bool = True  # centred padding (Ultralytics) or image at the top-left (mmdet)
    channel_order: str = "rgb"  # channel order the network expects
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, in the network's channel order
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)


LETTERBOX_PRESETS = {
    "yolov8": LetterboxConfig(),
    "rtmdet": LetterboxConfig(center=False, channel_order="bgr", mean=(103.53, 116.28, 123.675),
                              std=(57.375, 57.12, 58.395)),
}


def letterbox(image_rgb: np.ndarray, input_size: tuple[int, int], config: LetterboxConfig):
    """Resize keeping the aspect ratio to fit ``input_size`` = (w, h), pad, normalise.

    Returns (tensor (1, 3, h, w) float32, (sx, sy) resize factors, (px, py) padding offset)."""
    h, w = image_rgb.shape[:2]
    in_w, in_h = int(input_size[0]), int(input_size[1])
    ratio = min(in_w / w, in_h / h)
    new_w, new_h = max(1, min(in_w, round(w * ratio))), max(1, min(in_h, round(h * ratio)))
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if config.channel_order.lower() == "bgr":
        resized = resized[..., ::-1]
    elif config.channel_order.lower() != "rgb":
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {config.channel_order!r}")
    px = (in_w - new_w) // 2 if config.center else 0
    py = (in_h - new_h) // 2 if config.center else 0
    canvas = np.full((in_h, in_w, 3), config.pad_value, np.float32)
    canvas[py:py + new_h, px:px + new_w] = resized
    canvas = (canvas - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    tensor = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
    return tensor, (new_w / w, new_h / h), (px, py)


def unletterbox_boxes(boxes: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
                      image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes in network-input pixels -> image pixels, clipped to the image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - offset[0]) / scale[0]
    b[:, [1, 3]] = (b[:, [1, 3]] - offset[1]) / scale[1]
    h, w = image_hw
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w - 1)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h - 1)
    return b.astype(np.float32)


def decode_yolov8(output: np.ndarray, person_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv8 head output (1, 4 + C, N) / (4 + C, N) / transposed -> person boxes xyxy (input pixels) and scores.

    The axis holding 4 + C is taken to be the shorter one (N anchors outnumber classes in every real export)."""
    out = np.asarray(output, np.float32)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise DetectionError(f"YOLOv8 output must have batch 1, got shape {out.shape}")
        out = out[0]
    if out.ndim != 2:
        raise DetectionError(f"YOLOv8 output must be (1, 4 + C, N), got shape {np.shape(output)}")
    if out.shape[0] > out.shape[1]:
        out = out.T
    if out.shape[0] < 5 or person_class >= out.shape[0] - 4:
        raise DetectionError(f"YOLOv8 output with {out.shape[0] - 4} classes has no class {person_class} "
                             f"(shape {np.shape(output)})")
    cx, cy, bw, bh = out[:4]
    cls = out[4:]
    is_person = cls.argmax(axis=0) == person_class
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    return boxes[is_person], cls[person_class, is_person]


def decode_rtmdet(dets: np.ndarray, labels: np.ndarray, person_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MMDeploy detection outputs ``dets`` (1, N, 5) and ``labels`` (1, N) -> person boxes (input pixels), scores."""
    d = np.asarray(dets, np.float32)
    lab = np.asarray(labels).reshape(-1)
    d = d[0] if d.ndim == 3 else d
    if d.ndim != 2 or d.shape[1] != 5 or len(d) != len(lab):
        raise DetectionError(f"RTMDet outputs must be dets (1, N, 5) and labels (1, N), got {np.shape(dets)} and "
                             f"{np.shape(labels)}")
    keep = lab.astype(np.int64) == person_class
    return d[keep, :4], d[keep, 4]


def detect_layout(output_shapes: list) -> str:
    """'yolov8' or 'rtmdet' from the model's output shapes (entries may be symbolic strings/None)."""
    if len(output_shapes) == 1 and len(output_shapes[0]) == 3:
        return "yolov8"
    if len(output_shapes) == 2:
        ranks = sorted(len(s) for s in output_shapes)
        if ranks == [2, 3] and any(len(s) == 3 and s[-1] == 5 for s in output_shapes):
            return "rtmdet"
    raise DetectionError(f"unsupported detector outputs {output_shapes}: expected one (1, 4 + C, N) output "
                         "(YOLOv8) or dets (1, N, 5) + labels (1, N) (RTMDet / MMDeploy)")


def _static_input_size(shape) -> tuple[int, int] | None:
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[3]), int(shape[2])
    return None


class OnnxPersonDetector:
    """``detect(image_rgb) -> Detections`` with an ONNX person/COCO detector run by onnxruntime.

    ``session`` may be given instead of ``model_path`` (any object with onnxruntime's ``get_inputs``,
    ``get_outputs`` and ``run``), which also lets the post-processing be tested without onnxruntime.
    """

    def __init__(self, model_path: str | Path | None = None, *, layout: str = "auto",
                 preprocess: str | LetterboxConfig = "auto", input_size: tuple[int, int] | None = None,
                 score_threshold: float = 0.3, nms_iou: float = 0.3, person_class: int = 0,
                 providers: list[str] | None = None, session=None):
        if session is None:
            if model_path is None:
                raise ValueError("give model_path (an .onnx file) or session")
            session = self._open(Path(model_path), providers)
        self.session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise DetectionError(f"the detector must take one image input, it takes {len(inputs)}")
        self.input_name = inputs[0].name
        shapes = [list(o.shape) for o in session.get_outputs()]
        self.layout = detect_layout(shapes) if layout == "auto" else layout
        if self.layout not in LETTERBOX_PRESETS:
            raise ValueError(f"layout must be 'auto', 'yolov8' or 'rtmdet', got {layout!r}")
        static = _static_input_size(list(inputs[0].shape))
        if input_size is not None and static is not None and tuple(input_size) != static:
            raise DetectionError(f"input_size {tuple(input_size)} differs from the model's fixed input {static}")
        self.input_size = tuple(input_size) if input_size is not None else (static or DEFAULT_INPUT_SIZE)
        if isinstance(preprocess, str):
            key = self.layout if preprocess == "auto" else preprocess
            if key not in LETTERBOX_PRESETS:
                raise ValueError(f"preprocess must be 'auto', a preset {list(LETTERBOX_PRESETS)} or a LetterboxConfig")
            preprocess = LETTERBOX_PRESETS[key]
        self.preprocess = replace(preprocess)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.person_class = person_class

    @staticmethod
    def _open(path: Path, providers):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DetectorUnavailableError(
                "the ONNX person detector needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from exc
        if not path.is_file():
            raise FileNotFoundError(f"ONNX detector file not found: {path}")
        return ort.InferenceSession(str(path), providers=providers or ort.get_available_providers())

    def postprocess(self, outputs: list, scale, offset, image_hw) -> Detections:
        """Raw network outputs of one image -> person Detections in image pixels."""
        if self.layout == "yolov8":
            boxes, scores = decode_yolov8(outputs[0], self.person_class)
        else:
            first, second = outputs[0], outputs[1]
            if np.ndim(first) == 2:  # labels came first
                first, second = second, first
            boxes, scores = decode_rtmdet(first, second, self.person_class)
        boxes = unletterbox_boxes(boxes, scale, offset, image_hw)
        return select_detections(boxes, scores, self.score_threshold, self.nms_iou)

    def detect(self, image_rgb: np.ndarray) -> Detections:
        image = check_rgb_image(image_rgb)
        tensor, scale, offset = letterbox(image, self.input_size, self.preprocess)
        outputs = self.session.run(None, {self.input_name: tensor})
        found = self.postprocess(outputs, scale, offset, image.shape[:2])
        log.debug("ONNX detector (%s): %d people", self.layout, len(found.scores))
        return found
