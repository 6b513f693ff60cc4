"""Turning one :class:`~sapiens2.tasks.results.Prediction` into files, and into the annotated frames of videos.

Per image with output base ``B`` (the input's path below its root, without extension, inside the output folder):

======== =====================================================================================================
task     files
======== =====================================================================================================
pose     ``B.pose.json`` (see :mod:`sapiens2.serving.pose_json`), ``B.pose.png`` (keypoints + skeleton drawn)
seg      ``B.seg.png`` (8-bit class ids, 0 = background), ``B.seg_vis.png`` (coloured overlay, legend of the
         classes present on the right); with probabilities ``B.seg_probs.npy`` (float16, (29, H, W));
         ``seg_classes.json`` once per folder (id, name, RGB colour of each class id)
normal   ``B.normal.npy`` (float32 (H, W, 3) unit vectors), ``B.normal.png`` (``(n + 1) * 127.5``)
pointmap ``B.pointmap.npy`` (float32 (H, W, 3) metres), ``B.depth.png`` (uint16 millimetres, 0 = no data),
         ``B.depth_vis.png`` (colour, near = bright), ``B.ply`` (coloured foreground points, capped)
albedo   ``B.albedo.png``
matting  ``B.alpha.png`` (8-bit alpha), ``B.cutout.png`` (RGBA)
======== =====================================================================================================

Video frames write the data files only (not the ``*.png`` visualisations, which the per-task video carries)
as ``B/<frame:06d>.<suffix>``; pose goes to ``B.pose.jsonl`` (``B.frames.jsonl`` for pointmap without pose:
the per-frame scale); each task gets ``B.<task>.mp4``; ``B.summary.json`` sums the video up (written last).
Every file is written atomically by the :mod:`sapiens2.io` writers.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sapiens2.data.specs import seg_classes
from sapiens2.io import write_json, write_npy, write_ply
from sapiens2.io import write_png as _write_png
from sapiens2.models.heads.task_table import resolve_task, task_names
from sapiens2.tasks.results import Prediction
from sapiens2.visualization import (albedo_to_uint8, depth_to_rgb, draw_poses, mask_to_uint8, matte_composite,
                                    matte_cutout, normals_to_rgb, overlay_segmentation)
from sapiens2.visualization._arrays import row_bands

from .pose_json import image_pose_document

TASK_ORDER = task_names()
# zlib level 1: about 20% faster to encode than OpenCV's default 3, for about 10% larger files (writing is a
# large share of the pipeline's time outside the model on fast devices).
PNG_COMPRESSION = 1
DEFAULT_PLY_MAX_POINTS = 200_000
# The seg overlay (``*.seg_vis.png``) of a larger image is a preview of at most this many pixels (seg_preview): a 4K
# screen (3840x2160), what a person looks at. The data files (class ids, probabilities) stay at full resolution.
PREVIEW_MAX_PIXELS = 3840 * 2160
# The pictures (pose drawing, normal, albedo, cutout) are written as ``picture`` PNGs: same pixels; measured on the
# pipeline benchmark's outputs (4 images, the matting composite for the cutout): 2.1-3.6x less encoding CPU, files
# 0.98-1.09x the size. Not the depth picture: its flat colour areas compress far better with the default filters.
MAX_DEPTH_MM = 65535  # uint16 ceiling: 65.535 m

# suffix -> whether it is a visualisation (skipped for video frames, where the task's mp4 shows it)
SEG_PROBS_SUFFIX = ".seg_probs.npy"
# One class table per folder rather than one per image: the 29 names are the same for every image (and every
# video frame), and a per-image file would be one more output for resuming to check.
SEG_CLASSES_FILE = "seg_classes.json"


@dataclass(frozen=True)
class OutputOptions:
    """What to write besides the defaults, and the facts that go into file headers."""

    seg_probabilities: bool = False
    ply_max_points: int = DEFAULT_PLY_MAX_POINTS
    model_names: dict[str, str] = field(default_factory=dict)  # task -> model name for the pose header
    # what else produced the poses, for the pose header: input_size, flip_test, detector (Predictor.pose_settings)
    pose_settings: Mapping[str, object] = field(default_factory=dict)


def write_png(path: Path, image: np.ndarray, *, consume: bool = False, label_map: bool = False,
              picture: bool = False) -> Path:
    """``consume``: a picture made for this file only, reordered to BGR in place (no full-size copy).
    ``label_map``: class ids (:data:`sapiens2.io.writers.LABEL_MAP_PNG`: faster, smaller, same pixels).
    ``picture``: a photo-like overlay (:data:`sapiens2.io.writers.PICTURE_PNG`: faster, same pixels)."""
    return _write_png(path, image, compression=PNG_COMPRESSION, consume=consume, label_map=label_map,
                      picture=picture)


def order_tasks(tasks: Iterable[str]) -> list[str]:
    """Tasks (names or aliases) in the task table's order; an unknown name raises the table's
    :class:`~sapiens2.errors.UnknownTaskError` (a ``ValueError``)."""
    wanted = {resolve_task(t) for t in tasks}
    return [t for t in task_names() if t in wanted]


def with_suffix(base: Path, suffix: str) -> Path:
    """``base`` + ``suffix`` (``base`` has no extension of its own, so nothing is replaced)."""
    return base.with_name(base.name + suffix)


def task_suffixes(task: str, options: OutputOptions, *, video_frame: bool = False) -> list[str]:
    suffixes = [s for s, is_vis in TASK_OUTPUTS[task].files if not (video_frame and is_vis)]
    if video_frame and task == "pose":
        suffixes = []  # a video's poses go to one JSON Lines file
    if task == "seg" and options.seg_probabilities:
        suffixes.append(SEG_PROBS_SUFFIX)
    return suffixes


def image_outputs(base: Path, tasks: Sequence[str], options: OutputOptions) -> list[Path]:
    """Every file an image input produces (used to decide whether it is already done)."""
    return [with_suffix(base, s) for t in tasks for s in task_suffixes(t, options)]


def video_jsonl_suffix(tasks: Sequence[str]) -> str | None:
    """The per-frame JSON Lines file of a video: ``.pose.jsonl`` with pose, ``.frames.jsonl`` for pointmap
    without pose (per-frame scale), none otherwise."""
    if "pose" in tasks:
        return ".pose.jsonl"
    if "pointmap" in tasks:
        return ".frames.jsonl"
    return None


SUMMARY_SUFFIX = ".summary.json"


def video_outputs(base: Path, tasks: Sequence[str]) -> list[Path]:
    """The files that mark a video as done: its per-task videos, its JSON Lines file and its summary (written
    last)."""
    paths = [with_suffix(base, f".{t}.mp4") for t in tasks]
    suffix = video_jsonl_suffix(tasks)
    if suffix is not None:
        paths.append(with_suffix(base, suffix))
    paths.append(with_suffix(base, SUMMARY_SUFFIX))
    return paths


def frame_base(video_base: Path, frame_index: int) -> Path:
    return video_base / f"{frame_index:06d}"


def _result(prediction: Prediction, task: str):
    result = prediction.get(task)
    if result is None:
        raise ValueError(f"the prediction for {prediction.source or 'this input'} has no {task} result")
    return result


def foreground_mask(prediction: Prediction) -> np.ndarray | None:
    """The best foreground mask available: the pointmap's own, else the body-part segmentation's, else None."""
    if prediction.pointmap is not None and prediction.pointmap.mask is not None:
        return np.asarray(prediction.pointmap.mask, dtype=bool)
    if prediction.seg is not None:
        return prediction.seg.foreground
    return None


def depth_millimetres(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) metres -> uint16 millimetres; 0 where invalid, 1..65535 (clipped) elsewhere."""
    out = np.empty(depth.shape, np.uint16)
    for rows in row_bands(*depth.shape):  # a few MB of float temporaries at any size
        mm = np.rint(np.clip(np.nan_to_num(depth[rows], nan=0.0, posinf=0.0, neginf=0.0) * 1000.0, 1.0,
                             MAX_DEPTH_MM))
        out[rows] = np.where(valid[rows], mm, 0)
    return out


def valid_depth(prediction: Prediction) -> np.ndarray:
    """Pixels with a usable depth: finite, in front of the camera, inside the foreground if one is known."""
    points = prediction.pointmap.pointmap
    mask = foreground_mask(prediction)
    valid = np.empty(points.shape[:2], bool)
    for rows in row_bands(*points.shape[:2]):
        part = points[rows]
        valid[rows] = np.isfinite(part).all(axis=2) & (part[..., 2] > 0)
        if mask is not None:
            valid[rows] &= mask[rows]
    return valid


def _spread(count: int, cap: int) -> np.ndarray | None:
    """Positions of ``cap`` of ``count`` items, evenly spread; None when all are kept."""
    if cap <= 0 or count <= cap:
        return None
    return np.linspace(0, count - 1, cap).round().astype(np.int64)


def subsample(indices: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` of ``indices``, evenly spread (deterministic, keeps the cloud's coverage)."""
    picked = _spread(len(indices), cap)
    return indices if picked is None else indices[picked]


def subsample_mask(valid: np.ndarray, cap: int) -> np.ndarray:
    """``subsample(np.flatnonzero(valid), cap)`` without the 8-bytes-per-pixel index array: band by band."""
    picked = _spread(int(np.count_nonzero(valid)), cap)
    if picked is None:
        return np.flatnonzero(valid.reshape(-1))
    width = valid.shape[1] if valid.ndim == 2 else 1
    rows2d = valid.reshape(valid.shape[0], -1)
    out, seen = [], 0
    for rows in row_bands(rows2d.shape[0], width):
        part = np.flatnonzero(rows2d[rows].reshape(-1))
        lo, hi = np.searchsorted(picked, [seen, seen + len(part)])
        out.append(part[picked[lo:hi] - seen] + rows.start * width)
        seen += len(part)
    return np.concatenate(out)


def preview_size(hw: tuple[int, int], max_pixels: int | None = None) -> tuple[int, int]:
    """(H, W) of the preview of an image of size ``hw``: itself up to ``max_pixels`` (default
    :data:`PREVIEW_MAX_PIXELS`), else shrunk to at most that many pixels, aspect kept (sides rounded down, >= 1)."""
    max_pixels = PREVIEW_MAX_PIXELS if max_pixels is None else max_pixels
    h, w = int(hw[0]), int(hw[1])
    if h * w <= max_pixels:
        return h, w
    scale = (max_pixels / (h * w)) ** 0.5
    return max(1, int(h * scale)), max(1, int(w * scale))


def seg_preview(image_rgb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image and class ids to draw the seg overlay from: themselves up to :data:`PREVIEW_MAX_PIXELS` (a 4K
    screen), above it both shrunk to that many pixels (image: INTER_AREA, ids: nearest). A person looks at a
    preview anyway, and drawing and encoding a 24 MP overlay took longer than the class ids themselves; the class
    ids file keeps the full resolution."""
    h, w = labels.shape[:2]
    ph, pw = preview_size((h, w))
    if (ph, pw) == (h, w):
        return image_rgb, labels
    size = (pw, ph)
    return (cv2.resize(np.ascontiguousarray(image_rgb), size, interpolation=cv2.INTER_AREA),
            cv2.resize(np.ascontiguousarray(labels), size, interpolation=cv2.INTER_NEAREST))


def render_task(prediction: Prediction, image_rgb: np.ndarray, task: str, *,
                valid: np.ndarray | None = None, track_ids: Sequence[int] | None = None,
                keypoints: np.ndarray | None = None) -> np.ndarray:
    """The RGB uint8 picture of one task's result at the image size (``*_vis`` files and video frames).
    ``valid``: the pointmap's :func:`valid_depth`, when the caller has it already. Pose in videos:
    ``track_ids`` label and colour each person, ``keypoints`` (P, K, 2) replace the model's (smoothed ones)."""
    entry = TASK_OUTPUTS.get(task)
    if entry is None:
        raise ValueError(f"unknown task {task!r}")
    return entry.render(prediction, image_rgb, valid=valid, track_ids=track_ids, keypoints=keypoints)


def _render_pose(prediction: Prediction, image_rgb: np.ndarray, *, track_ids=None, keypoints=None,
                 **_) -> np.ndarray:
    pose = _result(prediction, "pose")
    if pose.num_people == 0:
        return np.ascontiguousarray(image_rgb).copy()
    points = pose.keypoints if keypoints is None else keypoints
    ids = None if track_ids is None else [int(i) for i in track_ids]
    return draw_poses(image_rgb, points, pose.scores, boxes=pose.boxes, track_ids=ids)


def _render_seg(prediction: Prediction, image_rgb: np.ndarray, **_) -> np.ndarray:
    return overlay_segmentation(*seg_preview(image_rgb, _result(prediction, "seg").mask), legend=True)


def _render_normal(prediction: Prediction, image_rgb: np.ndarray, **_) -> np.ndarray:
    normal = _result(prediction, "normal")
    return normals_to_rgb(normal.normals, normal.mask)


def _render_pointmap(prediction: Prediction, image_rgb: np.ndarray, *, valid=None, **_) -> np.ndarray:
    valid = valid_depth(prediction) if valid is None else valid
    return depth_to_rgb(_result(prediction, "pointmap").depth, valid)


def _render_albedo(prediction: Prediction, image_rgb: np.ndarray, **_) -> np.ndarray:
    albedo = _result(prediction, "albedo")
    return albedo_to_uint8(albedo.albedo, albedo.mask)


def _render_matting(prediction: Prediction, image_rgb: np.ndarray, **_) -> np.ndarray:
    matting = _result(prediction, "matting")
    return matte_composite(image_rgb, matting.alpha, foreground=matting.foreground)


def write_seg_classes(folder: Path) -> Path:
    """``folder/seg_classes.json``: the id, name and RGB colour (as drawn in ``*.seg_vis.png``) of each class id
    in the ``*.seg.png`` files there. Shared by every image of the folder: written when missing or not as
    expected (damaged), else left alone, also by ``--overwrite`` (its content never depends on the input)."""
    import json

    path = Path(folder) / SEG_CLASSES_FILE
    classes = seg_classes()
    doc = {"format": "sapiens2.seg_classes", "classes": [
        {"id": i, "name": name, "color": [int(v) for v in classes.palette[i]]} for i, name in enumerate(classes.names)],
        # the overlays are previews above this size; the class ids (*.seg.png) are always at the image size
        "overlay_max_pixels": PREVIEW_MAX_PIXELS}
    try:
        if json.loads(path.read_text(encoding="utf-8")) == doc:
            return path
    except (OSError, ValueError):
        pass
    return write_json(path, doc)


def _write_pointcloud(path: Path, prediction: Prediction, image_rgb: np.ndarray, valid: np.ndarray,
                      cap: int) -> Path:
    points = prediction.pointmap.pointmap.reshape(-1, 3)
    keep = subsample_mask(valid, cap)
    colours = np.ascontiguousarray(image_rgb).reshape(-1, 3)
    return write_ply(path, points[keep], colours[keep])


def write_task_files(prediction: Prediction, image_rgb: np.ndarray, base: Path, task: str,
                     options: OutputOptions, *, video_frame: bool = False, visualisations: bool = True,
                     only: Collection[str] | None = None) -> list[Path]:
    """Write one task's files for one image (or one video frame: data files only); returns the paths.
    ``visualisations`` False: not the pictures (:func:`visualisation_suffixes`); ``only``: just these suffixes."""
    result = _result(prediction, task)
    wanted = set(task_suffixes(task, options, video_frame=video_frame))
    if not visualisations:
        wanted -= set(visualisation_suffixes(task))
    if only is not None:
        wanted &= set(only)
    written: list[Path] = []

    def out(suffix: str) -> Path | None:
        if suffix not in wanted:
            return None
        path = with_suffix(base, suffix)
        written.append(path)
        return path

    TASK_OUTPUTS[task].write(out, prediction, image_rgb, result, options)
    return written


def visualisation_suffixes(task: str) -> list[str]:
    """The suffixes of ``task``'s pictures made for a person to look at (``*.pose.png``, ``*.seg_vis.png``, ...),
    as opposed to its data files."""
    return [suffix for suffix, is_vis in TASK_OUTPUTS[task].files if is_vis]


# Each writer gets ``out(suffix)``: the path to write that file to, or None when it is not wanted.
def _write_pose(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result, options: OutputOptions) -> None:
    if path := out(".pose.json"):
        # compact: C-speed encoding, and one line per number would make big files
        write_json(path, image_pose_document(result, model=options.model_names.get("pose"),
                                             image_size=prediction.image_size,
                                             settings=options.pose_settings), indent=None)
    if path := out(".pose.png"):
        write_png(path, render_task(prediction, image_rgb, "pose"), consume=True, picture=True)


def _write_seg(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result, options: OutputOptions) -> None:
    if path := out(".seg.png"):
        write_png(path, np.asarray(result.mask, dtype=np.uint8), label_map=True)
        write_seg_classes(path.parent)
    if path := out(".seg_vis.png"):
        write_png(path, render_task(prediction, image_rgb, "seg"), consume=True, picture=True)
    if path := out(SEG_PROBS_SUFFIX):
        if result.probabilities is None:
            raise ValueError("segmentation probabilities were requested but the prediction has none")
        write_npy(path, np.asarray(result.probabilities, dtype=np.float16))


def _write_normal(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result,
                  options: OutputOptions) -> None:
    if path := out(".normal.npy"):
        write_npy(path, np.asarray(result.normals, dtype=np.float32))
    if path := out(".normal.png"):
        write_png(path, render_task(prediction, image_rgb, "normal"), consume=True, picture=True)


def _write_pointmap(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result,
                    options: OutputOptions) -> None:
    valid = valid_depth(prediction)
    if path := out(".pointmap.npy"):
        write_npy(path, np.asarray(result.pointmap, dtype=np.float32))
    if path := out(".depth.png"):
        write_png(path, depth_millimetres(result.depth, valid), picture=True)  # smooth: encoded as a picture
    if path := out(".depth_vis.png"):
        write_png(path, render_task(prediction, image_rgb, "pointmap", valid=valid), consume=True, picture=True)
    if path := out(".ply"):
        _write_pointcloud(path, prediction, image_rgb, valid, options.ply_max_points)


def _write_albedo(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result,
                  options: OutputOptions) -> None:
    if path := out(".albedo.png"):
        write_png(path, render_task(prediction, image_rgb, "albedo"), consume=True, picture=True)


def _write_matting(out: OutPath, prediction: Prediction, image_rgb: np.ndarray, result,
                   options: OutputOptions) -> None:
    if path := out(".alpha.png"):
        write_png(path, mask_to_uint8(np.asarray(result.alpha, dtype=np.float32)))
    if path := out(".cutout.png"):
        write_png(path, matte_cutout(image_rgb, result.alpha, foreground=result.foreground), consume=True,
                  picture=True)


def write_prediction(prediction: Prediction, image_rgb: np.ndarray, base: Path, tasks: Sequence[str],
                     options: OutputOptions, *, video_frame: bool = False, visualisations: bool = True) -> list[Path]:
    """Write every task's files for one image or video frame; returns the paths written. ``visualisations``
    False: the data files only (the service renders the pictures when they are asked for)."""
    written: list[Path] = []
    for task in tasks:
        written += write_task_files(prediction, image_rgb, base, task, options, video_frame=video_frame,
                                    visualisations=visualisations)
    return written


OutPath = Callable[[str], "Path | None"]


@dataclass(frozen=True)
class TaskOutputs:
    """The serving layer's part of a task's entry: its files, its picture and the writer of those files.

    files: (suffix, is a visualisation) per file of an image input; video frames skip the visualisations
    (the picture goes into the task's ``.mp4`` instead).
    """

    files: tuple[tuple[str, bool], ...]
    render: Callable[..., np.ndarray]
    write: Callable[[OutPath, Prediction, np.ndarray, Any, OutputOptions], None]


# One entry per task of the task table (models/heads/task_table.py); tests/test_task_table.py checks they match.
TASK_OUTPUTS: dict[str, TaskOutputs] = {
    "pose": TaskOutputs(((".pose.json", False), (".pose.png", True)), _render_pose, _write_pose),
    "seg": TaskOutputs(((".seg.png", False), (".seg_vis.png", True)), _render_seg, _write_seg),
    "normal": TaskOutputs(((".normal.npy", False), (".normal.png", True)), _render_normal, _write_normal),
    "pointmap": TaskOutputs(((".pointmap.npy", False), (".depth.png", False), (".depth_vis.png", True),
                             (".ply", False)), _render_pointmap, _write_pointmap),
    "albedo": TaskOutputs(((".albedo.png", False),), _render_albedo, _write_albedo),
    "matting": TaskOutputs(((".alpha.png", False), (".cutout.png", False)), _render_matting, _write_matting),
}
