"""The person detectors that have weights to load, made into ``detect(rgb) -> Detections`` objects.

Pose's default detector is RT-DETR (``rtdetr:PekingU/rtdetr_r50vd``), run through Hugging Face transformers (the
``detect`` extra) on the Predictor's device; its pre/post-processing is :mod:`sapiens2.tasks.detection.rtdetr`
(NumPy + OpenCV, no torchvision). Names:

- ``"auto"`` / ``"rtdetr"``: the default RT-DETR, by hub name through the Hugging Face cache (downloaded once);
- ``"rtdetr:ORG/NAME"``: another RT-DETR-family checkpoint on the hub (transformers layout, with a person class);
- ``"rtdetr:PATH"``: a local ``save_pretrained`` folder (``config.json``, ``preprocessor_config.json``,
  ``model.safetensors``).

Any other choice (``hog``, ``seg``, ``onnx:PATH``, ``none``, boxes files, objects) is passed through unchanged to
:func:`sapiens2.tasks.pose.pipeline.make_box_source`. A detector that cannot be loaded is an error that says how to
get it or which offline detector to choose: the choice never silently becomes another detector.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from sapiens2.checkpoints.detector_files import DEFAULT_DETECTOR_REPO, OFFLINE_DETECTORS, detector_folder
from sapiens2.errors import ModelNotAvailableError, one_line_reason
from sapiens2.tasks.detection import DetectionError, DetectorUnavailableError, DetrPreprocess, RtDetrPersonDetector, \
    person_label_id

__all__ = ["DEFAULT_DETECTOR", "detector_setting", "is_loaded_detector", "load_rtdetr", "resolve_detector"]

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = f"rtdetr:{DEFAULT_DETECTOR_REPO}"


def is_loaded_detector(spec) -> bool:
    """Whether ``spec`` names a detector with weights (this module loads it)."""
    if not isinstance(spec, (str, os.PathLike)) or isinstance(spec, Path):
        return False
    key = str(spec).strip().lower()
    return key in ("auto", "rtdetr") or key.startswith("rtdetr:")


def detector_setting(spec) -> str | None:
    """The detector as completion records and headers name it: the default spelled out (``None``, "auto" and
    "rtdetr" are all :data:`DEFAULT_DETECTOR`), other names as given."""
    if spec is None or (is_loaded_detector(spec) and str(spec).strip().lower() in ("auto", "rtdetr")):
        return DEFAULT_DETECTOR
    return str(spec).strip()


def resolve_detector(spec, *, device: torch.device | str = "cpu", cache_dir: str | os.PathLike | None = None):
    """A detector object for the names this module loads, else ``spec`` unchanged (see the module doc)."""
    if not is_loaded_detector(spec):
        return spec
    text = str(spec).strip()
    ref = text.split(":", 1)[1].strip() if ":" in text else ""
    return load_rtdetr(ref or None, device=device, cache_dir=cache_dir)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise DetectorUnavailableError(
            "the default person detector (RT-DETR) runs through Hugging Face transformers, which is not installed: "
            f"pip install 'sapiens2[detect]'; or choose a detector that needs no download: {OFFLINE_DETECTORS}"
        ) from exc
    return transformers


def load_rtdetr(ref: str | os.PathLike | None = None, *, device: torch.device | str = "cpu",
                cache_dir: str | os.PathLike | None = None, score_threshold: float = 0.5,
                nms_iou: float | None = 0.7) -> RtDetrPersonDetector:
    """An RT-DETR person detector from a hub repo id (default ``PekingU/rtdetr_r50vd``) or a local
    ``save_pretrained`` folder, on ``device`` (float32, inference mode)."""
    transformers = _transformers()  # before any download: a missing extra fails in a second
    found = detector_folder(ref, cache_dir=cache_dir)
    label = f"rtdetr:{found.name}"
    try:
        preprocess = DetrPreprocess.from_config(json.loads((found.folder / "preprocessor_config.json").read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotAvailableError(f"{label}: cannot read preprocessor_config.json ({one_line_reason(exc)})") from exc
    progress = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on every run
    try:
        model = transformers.AutoModelForObjectDetection.from_pretrained(str(found.folder), local_files_only=True)
    except Exception as exc:  # a folder of another model type, a truncated download, an old transformers
        raise ModelNotAvailableError(f"{label}: transformers {transformers.__version__} cannot load it as an object "
                                     f"detector ({one_line_reason(exc)})") from exc
    finally:
        if progress:
            transformers.utils.logging.enable_progress_bar()
    config = model.config
    if not getattr(config, "use_focal_loss", True):
        raise DetectionError(f"{label}: use_focal_loss is false; this adapter decodes sigmoid (focal loss) scores as "
                             "RT-DETR does")
    person = person_label_id(config.id2label)
    device = torch.device(device)
    model = model.to(device).eval()

    def forward(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            out = model(pixel_values=torch.from_numpy(pixels).to(device))
        return out.logits.float().cpu().numpy(), out.pred_boxes.float().cpu().numpy()

    log.info("person detector: %s (%s, person class %d)", label, type(model).__name__, person)
    return RtDetrPersonDetector(forward, preprocess, person_class=person, name=label,
                                score_threshold=score_threshold, nms_iou=nms_iou)
