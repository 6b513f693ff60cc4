"""The shipped no-download person detector: OpenCV's HOG + linear SVM people detector (Dalal & Triggs, INRIA).

Limits: it finds upright, mostly full-body people at least ~96 px tall (its 64x128 window holds a 96 px person
after the image is scaled to ``max_side``); it misses sitting, lying, heavily occluded or cropped people (head-and-
shoulders portraits, close-ups), gives loose boxes and false positives on upright textures, and is far less accurate
than a learned detector (use ``OnnxPersonDetector`` or a boxes file for real work). Scores are SVM margins, not
probabilities (roughly 0-3; 0.5 is a practical threshold).

OpenCV 5 removed ``HOGDescriptor`` from the main package; with it the detector raises ``DetectorUnavailableError``
(install ``opencv-python-headless<5`` or use another box source).
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from sapiens2.tasks.detection.boxes import (Detections, DetectorUnavailableError, check_rgb_image, empty_detections,
                                            select_detections)

__all__ = ["HogPersonDetector", "hog_available"]

log = logging.getLogger(__name__)

# Dalal & Triggs: the 64x128 window has a margin of about 16 px around the person on every side.
_WINDOW = (64.0, 128.0)
_MARGIN = 16.0


def hog_available() -> bool:
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


class HogPersonDetector:
    """``detect(image_rgb) -> Detections`` with OpenCV's default HOG people detector, multi-scale, thresholded, NMS.

    max_side: the image is resized so its longer side is at most this (speed; smaller people are lost);
    upscale_to: images whose longer side is below it are enlarged to it (finds people under 128 px);
    tighten: shrink each window by the training margin so the box hugs the person as the pose crop expects.
    """

    def __init__(self, score_threshold: float = 0.5, nms_iou: float = 0.3, max_side: int = 800,
                 upscale_to: int = 400, win_stride: int = 8, scale_step: float = 1.05, tighten: bool = True,
                 descriptor=None):
        if descriptor is None:
            if not hog_available():
                raise DetectorUnavailableError(
                    f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 moved it out of the main package); "
                    "install opencv-python-headless<5, or use an ONNX detector, a boxes file or seg-foreground boxes")
            descriptor = cv2.HOGDescriptor()
            descriptor.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        if scale_step <= 1.0:
            raise ValueError(f"scale_step must be > 1, got {scale_step}")
        self.descriptor = descriptor  # injectable so the post-processing can be tested without OpenCV's HOG
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self.upscale_to = upscale_to
        self.win_stride = win_stride
        self.scale_step = scale_step
        self.tighten = tighten

    def detect(self, image_rgb: np.ndarray) -> Detections:
        image = check_rgb_image(image_rgb)
        h, w = image.shape[:2]
        long_side = max(h, w)
        factor = min(1.0, self.max_side / long_side) if long_side > self.max_side else max(1.0, self.upscale_to / long_side)
        if factor != 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        if image.shape[0] < _WINDOW[1] or image.shape[1] < _WINDOW[0]:
            return empty_detections()
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        rects, weights = self.descriptor.detectMultiScale(
            gray, hitThreshold=0.0, winStride=(self.win_stride, self.win_stride), padding=(8, 8),
            scale=self.scale_step)
        rects = np.asarray(rects, np.float64).reshape(-1, 4)
        weights = np.asarray(weights, np.float64).reshape(-1)
        if len(rects) == 0:
            return empty_detections()
        x, y, rw, rh = rects.T
        if self.tighten:
            mx, my = rw * (_MARGIN / _WINDOW[0]), rh * (_MARGIN / _WINDOW[1])
            x, y, rw, rh = x + mx, y + my, rw - 2 * mx, rh - 2 * my
        boxes = np.stack([x, y, x + rw, y + rh], axis=1) / factor
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
        found = select_detections(boxes, weights, self.score_threshold, self.nms_iou)
        log.debug("HOG: %d raw windows, %d people after threshold and NMS", len(rects), len(found.scores))
        return found
