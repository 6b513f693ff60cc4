"""Top-down pose pipeline: person boxes -> UDP crops (batched through the model) -> optional flip test ->
DARK-UDP decode -> keypoints in image pixels (official ``vis_pose``).

Person boxes come from a :class:`BoxSource`: explicit boxes, a boxes file (:class:`BoxFileSource`), a detector
(``detect(rgb) -> Detections``: RT-DETR, HOG, ONNX or any object), the seg foreground's connected components, or
nothing.
When no box is found the whole image is one box, as the official tool does.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sapiens2.tasks.detection import (BoxFileSource, DetectionError, Detections, boxes_from_mask, empty_detections,
                                      whole_image_box)
from sapiens2.tasks.pose.codec import decode_udp_heatmaps
from sapiens2.tasks.pose.crop import BOX_PADDING, POSE_INPUT_SIZE, crop_boxes, decoded_to_image
from sapiens2.tasks.pose.flip import flip_test_average
from sapiens2.tasks.results import PoseResult

if TYPE_CHECKING:  # torch is only needed by the runner that the caller passes in
    import torch

__all__ = ["BoxSource", "PendingPose", "PoseImage", "as_detections", "make_box_source", "run_top_down",
           "start_top_down", "SEG_BOX_SOURCE"]

log = logging.getLogger(__name__)

SEG_BOX_SOURCE = "seg"
_NUM_KEYPOINTS = 308  # shape of an empty result (no person and no whole-image fallback)


class PoseRunner(Protocol):
    """What the pipeline needs from a model runner (see ``sapiens2.inference.predictor``)."""

    def to_input(self, images_uint8: np.ndarray) -> torch.Tensor: ...

    def forward(self, batch: torch.Tensor) -> torch.Tensor: ...


def as_detections(boxes) -> Detections:
    """Explicit boxes -> Detections: a Detections, or an array-like (N, 4) xyxy / (N, 5) xyxy + score (score 1)."""
    if isinstance(boxes, Detections):
        b, s = np.asarray(boxes.boxes, np.float32).reshape(-1, 4), np.asarray(boxes.scores, np.float32).reshape(-1)
    else:
        arr = np.asarray(boxes, np.float32)
        if arr.size == 0:
            return empty_detections()
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise DetectionError(f"boxes must be (N, 4) x1, y1, x2, y2 or (N, 5) with a score, got shape {arr.shape}")
        b = arr[:, :4]
        s = arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr), np.float32)
    if len(b) != len(s):
        raise DetectionError(f"{len(b)} boxes but {len(s)} scores")
    if not np.isfinite(b).all():
        raise DetectionError("boxes must hold finite numbers")
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise DetectionError("boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return Detections(np.ascontiguousarray(b), np.ascontiguousarray(s))


@dataclass
class BoxSource:
    """Where person boxes come from. ``kind``: "detector", "file", "seg" or "whole_image"."""

    kind: str
    name: str
    detector: object | None = None  # with detect(rgb) -> Detections
    files: BoxFileSource | None = None

    @property
    def label(self) -> str:
        return f"detector:{self.name}" if self.kind == "detector" else self.kind

    @property
    def needs_seg(self) -> bool:
        return self.kind == SEG_BOX_SOURCE

    def boxes(self, rgb: np.ndarray, source: Path | None = None, seg_mask: np.ndarray | None = None
              ) -> Detections | None:
        """Person boxes of one image, or None when the source has nothing for it (the caller falls back)."""
        if self.kind == "detector":
            return as_detections(self.detector.detect(rgb))
        if self.kind == "file":
            if source is None:
                log.warning("a boxes file cannot serve an image without a file path; using the whole image")
                return None
            found = self.files.boxes_for(source)
            return None if found is None else as_detections(found)
        if self.kind == SEG_BOX_SOURCE:
            if seg_mask is None:
                raise DetectionError("boxes='seg' needs the seg mask of the image")
            # bridge thin gaps between parts of one person (hair strands, a hand near the hip)
            dilate = max(1, int(0.005 * max(seg_mask.shape)))
            return boxes_from_mask(seg_mask, dilate=dilate)
        return None  # whole_image


def _detector_name(detector) -> str:
    named = getattr(detector, "name", None)  # e.g. "rtdetr:PekingU/rtdetr_r50vd"
    if isinstance(named, str) and named:
        return named
    name = type(detector).__name__
    return {"HogPersonDetector": "hog", "OnnxPersonDetector": "onnx"}.get(name, name)


#: Detectors with weights to load (RT-DETR, the default): the inference layer turns these names into a detector
#: object before this module sees them (``sapiens2.inference.detectors``); tasks load no models.
LOADED_DETECTORS = ("auto", "rtdetr")


def make_box_source(spec) -> BoxSource:
    """Person-box source from a user choice.

    ``spec``: "hog"; "onnx:PATH" (an ONNX detector file); "seg" (connected components of the seg foreground);
    "whole_image" or "none"; "file:PATH" or a :class:`BoxFileSource` (COCO JSON or a folder of ``<stem>.json``);
    or any object with ``detect(rgb) -> Detections`` (its ``name`` attribute, if any, names it in the outputs).
    The default "auto" (= RT-DETR) needs weights: ``sapiens2.inference.detectors.resolve_detector`` loads it.
    No choice here silently becomes another.
    """
    from sapiens2.tasks.detection import HogPersonDetector, OnnxPersonDetector

    if isinstance(spec, BoxSource):
        return spec
    if isinstance(spec, BoxFileSource):
        return BoxSource("file", "file", files=spec)
    if hasattr(spec, "detect"):
        return BoxSource("detector", _detector_name(spec), detector=spec)
    if spec is None:
        spec = "whole_image"
    if not isinstance(spec, (str, Path)):
        raise DetectionError(f"detector must be a name ('auto', 'rtdetr', 'hog', 'onnx:PATH', 'seg', 'whole_image', "
                             f"'file:PATH'), a BoxFileSource or an object with detect(), got {type(spec).__name__}")
    text = str(spec)
    key = text.lower()
    if key in LOADED_DETECTORS or key.startswith("rtdetr:"):
        raise DetectionError(f"detector {text!r} has weights to load: resolve it first with "
                             "sapiens2.inference.detectors.resolve_detector (the Predictor does)")
    if key == "hog":
        return BoxSource("detector", "hog", detector=HogPersonDetector())
    if key.startswith("onnx:"):
        return BoxSource("detector", "onnx", detector=OnnxPersonDetector(text[5:]))
    if key.startswith("file:"):
        return BoxSource("file", "file", files=BoxFileSource(text[5:]))
    if key == SEG_BOX_SOURCE:
        return BoxSource(SEG_BOX_SOURCE, SEG_BOX_SOURCE)
    if key in ("whole_image", "none"):
        return BoxSource("whole_image", "whole_image")
    raise DetectionError(f"unknown detector {text!r}; use 'auto' (RT-DETR), 'rtdetr[:NAME|PATH]', 'hog', "
                         "'onnx:PATH', 'seg', 'whole_image', 'file:PATH', a BoxFileSource or an object with detect()")


@dataclass
class PoseImage:
    """One image's share of a pose run: the pixels, its boxes (None / empty -> fallback) and where they came from."""

    rgb: np.ndarray
    detections: Detections | None
    box_source: str


def _final_boxes(item: PoseImage, fallback_whole_image: bool) -> tuple[np.ndarray, np.ndarray, str, bool]:
    """(boxes, scores, label, whether the whole image stands in for people that were looked for but not found)."""
    det = item.detections
    if det is not None and len(det.boxes) > 0:
        return np.asarray(det.boxes, np.float32), np.asarray(det.scores, np.float32), item.box_source, False
    if not fallback_whole_image:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), item.box_source, False
    h, w = item.rgb.shape[:2]
    # asking for the whole image (detector "none") is a choice, not a fallback
    return whole_image_box(h, w), np.ones(1, np.float32), "whole_image", item.box_source != "whole_image"


def _decode(heatmaps, input_size: tuple[int, int], keypoints=None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps on a GPU (CUDA, MPS) are decoded there and only the keypoints come back (one transfer per batch);
    CPU tensors and arrays take the NumPy decode (faster on the CPU). ``keypoints``: decode only these channels."""
    if isinstance(heatmaps, np.ndarray):
        return decode_udp_heatmaps(heatmaps, input_size, keypoints=keypoints)
    if heatmaps.device.type in ("cuda", "mps"):  # a torch tensor
        from sapiens2.tasks.pose.codec_torch import decode_udp_heatmaps_torch

        return decode_udp_heatmaps_torch(heatmaps, input_size, keypoints=keypoints)
    return decode_udp_heatmaps(heatmaps.float().cpu().numpy(), input_size, keypoints=keypoints)


def run_top_down(runner: PoseRunner, items: list[PoseImage], *, input_size: tuple[int, int] = POSE_INPUT_SIZE,
                 batch_size: int = 8, flip_test: bool = False, fallback_whole_image: bool = True,
                 padding: float = BOX_PADDING, clock=None, keypoints=None) -> list[PoseResult]:
    """Pose for several images; crops of all their people go through the model ``batch_size`` at a time.

    ``input_size`` is the crop (w, h); ``clock`` (optional) has ``stage(name)`` context managers for timing
    "pre" (cropping) and "post" (decoding); the runner times its own transfer and forward. ``keypoints``: decode
    only these heatmap channels (indices or a boolean mask, see ``decode_udp_heatmaps``); the results then hold
    those keypoints, in that order."""
    pending = start_top_down(runner, items, input_size=input_size, batch_size=batch_size, flip_test=flip_test,
                             fallback_whole_image=fallback_whole_image, padding=padding, clock=clock,
                             keypoints=keypoints)
    stage = clock.stage if clock is not None else (lambda name: contextlib.nullcontext())
    with stage("post"):
        return pending.finish()


@dataclass
class PendingPose:
    """A pose run past its last forward pass: the boxes are known, the last batch of heatmaps is not decoded yet
    (the caller may decode it while the model runs on the next images: :meth:`finish`)."""

    per_image: list[tuple[np.ndarray, np.ndarray, str, bool]]  # (boxes, scores, label, whole-image fallback)
    decoded: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]  # (image, person) -> (keypoints, scores)
    last: tuple | None  # (the batch's (image, person) keys, heatmaps, centres, sizes) or None
    input_size: tuple[int, int]
    keypoints: object  # the channel subset decoded (None: all)
    count: int  # keypoints per person

    @property
    def boxes(self) -> list[np.ndarray]:
        return [boxes for boxes, *_ in self.per_image]

    def finish(self) -> list[PoseResult]:
        """Decode the last batch and build each image's :class:`PoseResult`."""
        if self.last is not None:
            _decode_batch(self.decoded, *self.last, self.input_size, self.keypoints)
            self.last = None
        results = []
        for i, (boxes, box_scores, label, fallback) in enumerate(self.per_image):
            points = np.zeros((0, self.count, 2), np.float32)
            scores = np.zeros((0, self.count), np.float32)
            if len(boxes):
                points = np.stack([self.decoded[(i, j)][0] for j in range(len(boxes))])
                scores = np.stack([self.decoded[(i, j)][1] for j in range(len(boxes))])
            results.append(PoseResult(boxes=boxes, box_scores=box_scores, keypoints=points, scores=scores,
                                      box_source=label, whole_image_fallback=fallback))
        return results


def _decode_batch(decoded: dict, keys: list[tuple[int, int]], heatmaps, centers: np.ndarray, sizes: np.ndarray,
                  input_size: tuple[int, int], subset) -> None:
    kp, sc = _decode(heatmaps, input_size, keypoints=subset)
    kp = decoded_to_image(kp, centers, sizes, input_size)
    for n, key in enumerate(keys):
        decoded[key] = (kp[n].astype(np.float32), sc[n])


def start_top_down(runner: PoseRunner, items: list[PoseImage], *, input_size: tuple[int, int] = POSE_INPUT_SIZE,
                   batch_size: int = 8, flip_test: bool = False, fallback_whole_image: bool = True,
                   padding: float = BOX_PADDING, clock=None, keypoints=None) -> PendingPose:
    """:func:`run_top_down` up to its last forward pass (same arguments): every batch but the last is decoded
    (one batch of heatmaps is held at a time), the last is left to :meth:`PendingPose.finish`."""
    stage = clock.stage if clock is not None else (lambda name: contextlib.nullcontext())
    per_image = [_final_boxes(item, fallback_whole_image) for item in items]
    jobs = [(i, j) for i, (boxes, *_) in enumerate(per_image) for j in range(len(boxes))]
    count = _NUM_KEYPOINTS if keypoints is None else int(np.count_nonzero(keypoints)
                                                         if np.asarray(keypoints).dtype == bool
                                                         else np.asarray(keypoints).size)
    pending = PendingPose(per_image, {}, None, input_size, keypoints, count)
    for start in range(0, len(jobs), max(1, int(batch_size))):
        chunk = jobs[start:start + batch_size]
        with stage("pre"):
            crops, centers, sizes = [], [], []
            for i in sorted({i for i, _ in chunk}):
                rows = [j for ii, j in chunk if ii == i]
                got = crop_boxes(items[i].rgb, per_image[i][0][rows], input_size, padding)
                crops.append(got.crops)
                centers.append(got.centers)
                sizes.append(got.sizes)
        if pending.last is not None:  # decoded before the next forward: at most one batch of heatmaps is held
            with stage("post"):
                _decode_batch(pending.decoded, *pending.last, input_size, keypoints)
        x = runner.to_input(np.concatenate(crops))
        heatmaps = runner.forward(x)
        if flip_test:
            heatmaps = flip_test_average(heatmaps.float(), runner.forward(x.flip(-1)).float())
        pending.last = (sorted(chunk), heatmaps, np.concatenate(centers), np.concatenate(sizes))
    return pending
