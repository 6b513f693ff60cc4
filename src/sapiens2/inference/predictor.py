"""The Python API: ``Predictor(tasks, model=...)`` -> ``predict(image) -> Prediction`` and a streaming
``predict_many(images)`` that batches images through each model.

Per group of up to ``batch_size`` images: seg runs once (its foreground blanks the dense outputs' background and can
supply the pose boxes), pose crops of all people are batched, and every dense task runs one batched forward.
Pre- and post-processing follow the official tools (see ``seg``, ``dense``, ``matting``, ``pose.pipeline``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sapiens2.errors import InputSizeError, ModelNotAvailableError, Sapiens2Error, UsageError
from sapiens2.inference.detectors import is_loaded_detector, resolve_detector
from sapiens2.io.imagesize import DEFAULT_MAX_PIXELS
from sapiens2.models.heads.task_table import resolve_task, task_names
from sapiens2.runtime import autocast, parse_precision, resolve_device  # resolve_device re-exported
from sapiens2.tasks.image_tasks import IMAGE_TASKS, one_image_output
from sapiens2.tasks.pose.pipeline import (SEG_BOX_SOURCE, BoxSource, PoseImage, as_detections, make_box_source,
                                         start_top_down)
from sapiens2.tasks.preprocess import ImageInput, as_rgb_image, to_model_batch
from sapiens2.tasks.results import Prediction, SegResult
from sapiens2.tasks.seg import coarse_argmax, instance_masks, seg_input, upsampled_argmax, upsampled_softmax

__all__ = ["Predictor", "PredictInput", "StageClock", "ModelRunner", "resolve_device", "PREDICT_TASKS"]

log = logging.getLogger(__name__)

# The order tasks run in: seg first (its masks feed pose boxes and dense masking), then the table's order.
def run_order() -> tuple[str, ...]:
    """Every task in the order the Predictor runs them: seg first (its masks feed pose boxes and the foreground
    mask of dense tasks), then the task table's order. Read at call time, so tasks added to the table count."""
    return tuple(sorted(task_names(), key=lambda name: name != "seg"))


PREDICT_TASKS = run_order()

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StageClock:
    """Seconds per stage ("load", "pre", "forward", "post"), the device synchronised around each stage so that
    asynchronous GPU work is charged to the stage that queued it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def stage(self, name: str):
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize(self.device)
            self.totals[name] += time.perf_counter() - start


class ModelRunner:
    """One task model on the device: uint8 batches -> normalised tensors -> outputs (inference mode, autocast).

    Eager runners may be called from several threads at once (``sapiens2 serve`` runs concurrent batches): the
    models keep no state between calls, inference mode and autocast are per thread, and so is ``clock``.
    """

    def __init__(self, model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None,
                 input_hw: tuple[int, int], compile_settings=None, max_batch: int = 1):
        self.model = model
        self.device = device
        self.amp_dtype = amp_dtype
        self.input_hw = input_hw
        self._local = threading.local()  # the clock of the call running on this thread
        self._count_lock = threading.Lock()
        self.forward_calls = 0
        # --compile (inference.compile): compiled once per padded batch shape, cached by torch
        self.compile_settings = compile_settings
        self.max_batch = max(1, int(max_batch))
        self._compiled = None
        if compile_settings is not None:
            from sapiens2.inference.compile import compile_model

            self._compiled = compile_model(model, compile_settings)

    @property
    def clock(self) -> StageClock | None:
        return getattr(self._local, "clock", None)

    @clock.setter
    def clock(self, clock: StageClock | None) -> None:
        self._local.clock = clock

    def _count_forward(self) -> None:
        with self._count_lock:
            self.forward_calls += 1

    def _stage(self, name: str):
        clock = self.clock
        return clock.stage(name) if clock is not None else contextlib.nullcontext()

    def to_input(self, images_uint8) -> torch.Tensor:
        with self._stage("pre"):
            return to_model_batch(images_uint8, self.device)

    def forward(self, batch: torch.Tensor):
        if self._compiled is not None:
            return self._forward_compiled(batch)
        with self._stage("forward"), torch.inference_mode(), autocast(self.device, self.amp_dtype):
            self._count_forward()
            out = self.model(batch)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()

    def _forward_compiled(self, batch: torch.Tensor):
        """The compiled model on a batch padded to a power of two (few shapes, each compiled once; CUDA graphs
        replay fixed shapes); outputs are copied out of the graph's buffers and the padding dropped."""
        from sapiens2.inference.compile import padded_batch

        n = batch.shape[0]
        size = padded_batch(n, self.max_batch)
        if size > n:
            batch = torch.cat([batch, batch[-1:].expand(size - n, *batch.shape[1:])])
        with self._stage("forward"), torch.inference_mode(), autocast(self.device, self.amp_dtype):
            self._count_forward()
            if self.compile_settings.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            out = self._compiled(batch)
            outs = out if isinstance(out, tuple) else (out,)
            # float32 copies: a replayed CUDA graph overwrites its outputs at the next call
            outs = tuple(o[:n].float().clone() for o in outs)
        return outs if isinstance(out, tuple) else outs[0]


@contextlib.contextmanager
def _beside_forward():
    """Half the intra-op threads on this thread while the model runs on another (the count is per thread with
    OpenMP): the post-processing and the forward pass do not oversubscribe the cores, where every OpenMP join
    waits for a descheduled thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // 2))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Later:
    """Post-processing deferred past a group's forward passes: work over the whole group (pose decoding, batched
    across people and images), then work per image (by its position in the group), so that each prediction can be
    handed out (and its files written) as soon as its own work is done."""

    group: list[Callable[[], None]] = field(default_factory=list)
    each: list[Callable[[int], None]] = field(default_factory=list)


def _groups(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@dataclass
class PredictInput:
    """An image with what the pipelines may need beside the pixels: its file (boxes files are looked up by it),
    a video frame index, and explicit person boxes ((N, 4) xyxy, (N, 5) with scores, or Detections)."""

    image: ImageInput
    source: str | os.PathLike | None = None
    frame_index: int | None = None
    boxes: object | None = None


@dataclass
class _Loaded:
    rgb: np.ndarray
    source: Path | None
    frame_index: int | None
    boxes: object | None

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def _parse_tasks(tasks) -> tuple[str, ...]:
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise Sapiens2Error(f"give at least one task of {', '.join(PREDICT_TASKS)}")
    wanted = {resolve_task(name) for name in names}  # the task table's names and aliases, its one error
    return tuple(t for t in run_order() if t in wanted)


def resolve_amp_dtype(dtype, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a user's ``dtype`` choice on ``device``; None means plain float32."""
    d = parse_precision(dtype, allowed=("float32", "bfloat16", "float16"))  # the runtime's names, its error
    if d == torch.float32:
        return None
    if device.type == "cpu" and d == torch.float16:
        log.warning("float16 is not used on CPU (slow and inaccurate there); running float32. Ask for bfloat16 "
                    "to use reduced precision on CPU")
        return None
    return d


def _check_name(task: str, name: str) -> None:
    """Fail before any download for names that have no checkpoint (albedo; matting other than 1b)."""
    from sapiens2.checkpoints.registry import list_models, resolve_model_name

    try:
        resolve_model_name(name, task=task)
    except ModelNotAvailableError as exc:
        if task == "albedo":
            raise ModelNotAvailableError(
                f"albedo has no public checkpoint, so {name!r} cannot be loaded for it; pass a local albedo "
                f"checkpoint file or model object, e.g. model={{'albedo': 'my_albedo.safetensors', ...}}") from exc
        published = ", ".join(list_models(task)) or "none"
        raise ModelNotAvailableError(
            f"{task}: {exc}. Published {task} models: {published}; choose one per task, e.g. "
            f"model={{'{task}': '{published.split(', ')[0]}', ...}}") from exc


class Predictor:
    """Run Sapiens2 tasks on images and get typed results (NumPy, at the original resolution).

    tasks: one or more of "seg", "pose", "normal", "pointmap", "albedo", "matting".
    model: a size ("0.4b": the published model of that size for every task), a published name or checkpoint path
        (one task), a dict task -> size / name / path / ``Sapiens2TaskModel``, or a model object (one task).
        Names are checked before anything is loaded: albedo has no public checkpoint and matting exists at 1b only.
    device: "auto" (cuda, then mps, then cpu) or a torch device. Model objects are moved there.
    dtype: "float32", "bfloat16" or "float16", applied with ``torch.autocast`` (weights stay float32); on CPU
        float16 falls back to float32.
    batch_size: images per forward for seg / dense / matting, and person crops per forward for pose.
    flip_test: pose flip test (mirrored crop, heatmaps flipped back with left/right swapped, averaged); pose only.
    detector: pose box source: "auto" (default: RT-DETR ``PekingU/rtdetr_r50vd`` through transformers, fetched once
        into the Hugging Face cache; see ``sapiens2.inference.detectors``), "rtdetr:ORG/NAME|PATH", "hog", "onnx:PATH",
        "seg", "whole_image", "file:PATH", a ``BoxFileSource`` or an object with ``detect(rgb) -> Detections``.
        Boxes given to ``predict(..., boxes=...)`` ((N, 4) / (N, 5) array, Detections, or "seg") take precedence.
        When none is found the whole image is one box (official) unless ``fallback_whole_image=False``.
    input_size: (H, W) model input for every task instead of the size each model was trained at (recorded in
        checkpoints from ``sapiens2 train``, else 1024x768), e.g. for speed; must be multiples of 16; pointmap's
        scale branch only accepts the size it was trained at.
    return_probabilities: also return the per-class softmax of seg (29, H, W) float32 (large for big images).
    max_pixels: refuse images with more pixels (width x height): files from their header, before decoding
        (``ImageTooLargeError``), arrays before any processing; default 100 megapixels, 0 for no limit.
    compile: ``torch.compile`` the models (default False: eager). True: the device's default mode (CUDA:
        "reduce-overhead", i.e. CUDA graphs; elsewhere "default"); or a mode name / ``CompileSettings``. Batches
        are padded to powers of two up to ``batch_size`` so each shape compiles once (see ``inference.compile``).
    mask_with_seg: blank the background of normal / pointmap / albedo with the seg foreground; default: when
        seg is among the tasks. Seg runs once per image either way.
    backend: "torch" (default), "onnxruntime" (an exported .onnx given as the model, or the torch model exported
        once into ``export_cache``; see ``inference.backends``), "aoti" (an AOTInductor package, or the model
        compiled once into ``export_cache`` for this machine) or "tensorrt". Pre/post-processing is shared.
    coarse_seg: seg class ids made at the image size shrunk to the seg input's pixel count and enlarged
        nearest-neighbour (``tasks.seg.coarse_argmax``): a preview for live mode, several times cheaper than the
        official upsampling of every class to every pixel; default False (official).
    """

    def __init__(self, tasks: str | Sequence[str], model: str | os.PathLike | nn.Module | Mapping = "0.4b", *,
                 device: str | torch.device = "auto", dtype: str | torch.dtype = "float32", batch_size: int = 4,
                 flip_test: bool = False, detector="auto", input_size: tuple[int, int] | None = None,
                 return_probabilities: bool = False, mask_with_seg: bool | None = None,
                 fallback_whole_image: bool = True, rope_dtype: str = "bf16",
                 cache_dir: str | os.PathLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 compile: bool | str | object = False,
                 backend: str = "torch", export_cache: str | os.PathLike | None = None, coarse_seg: bool = False):
        self.tasks = _parse_tasks(tasks)
        self.coarse_seg = bool(coarse_seg)
        # -- deployment backends (issue 15): checked before anything is loaded
        from sapiens2.inference.backends import check_backend

        self.backend = check_backend(backend, dtype)
        self._export_cache = export_cache
        self._input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        if max_pixels is not None and int(max_pixels) < 0:
            raise Sapiens2Error(f"max_pixels must be >= 0 (0 = no limit), got {max_pixels}")
        self.max_pixels = int(max_pixels or 0)
        if int(batch_size) < 1:
            raise Sapiens2Error(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp_dtype(dtype, self.device)
        from sapiens2.inference.compile import parse_compile

        self.compile_settings = parse_compile(compile, self.device)  # None: eager
        if self.compile_settings is not None and self.backend != "torch":
            raise UsageError(f"compile applies to the torch backend only, not {self.backend!r} (an exported model "
                             "is already compiled by its runtime)")
        self.flip_test = bool(flip_test)
        self.return_probabilities = bool(return_probabilities)
        self.fallback_whole_image = bool(fallback_whole_image)
        self.mask_with_seg = ("seg" in self.tasks) if mask_with_seg is None else bool(mask_with_seg)
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
        self.box_source: BoxSource | None = None
        if "pose" in self.tasks and not is_loaded_detector(detector):
            self.box_source = make_box_source(detector)
        needed = list(self.tasks)
        if self._needs_seg and "seg" not in needed:
            needed.insert(0, "seg")
        specs = self._model_specs(model, needed)
        for task, spec in specs.items():  # names first: fail before downloading anything
            if isinstance(spec, (str, os.PathLike)) and not Path(spec).exists():
                _check_name(task, str(spec))
        if "pose" in self.tasks and self.box_source is None:
            # RT-DETR (the default, "auto"): loaded before the Sapiens2 models, so a detector that cannot be had
            # fails first, saying how to fetch it or which offline detector to choose
            self.box_source = make_box_source(resolve_detector(detector, device=self.device, cache_dir=cache_dir))
        self.runners: dict[str, ModelRunner] = {}
        for task in needed:
            m = self._load(task, specs[task], rope_dtype, cache_dir)
            self.runners[task] = ModelRunner(m, self.device, self.amp_dtype, self._input_hw(task, m, input_size),
                                             compile_settings=self.compile_settings, max_batch=self.batch_size)

    # ---- construction helpers ----
    @property
    def _needs_seg(self) -> bool:
        return ("seg" in self.tasks or (self.mask_with_seg and any(t in self.tasks and IMAGE_TASKS[t].masked_by_seg
                                                                   for t in IMAGE_TASKS))
                or (self.box_source is not None and self.box_source.needs_seg))

    def _model_specs(self, model, needed: list[str]) -> dict[str, object]:
        if isinstance(model, Mapping):
            unknown = [k for k in model if k not in run_order()]
            if unknown:
                raise Sapiens2Error(f"model dict has unknown task keys {unknown}; use {', '.join(run_order())}")
            missing = [t for t in needed if t not in model]
            if missing:
                why = " (seg is needed for the foreground mask / seg boxes)" if missing == ["seg"] else ""
                raise Sapiens2Error(f"no model given for {', '.join(missing)}{why}; add them to the model dict")
            return {t: model[t] for t in needed}
        if isinstance(model, nn.Module):
            if len(needed) != 1:
                raise Sapiens2Error(f"one model object cannot serve the tasks {needed}; pass a dict task -> model")
            return {needed[0]: model}
        if isinstance(model, (str, os.PathLike)):
            if Path(model).exists() and len(needed) != 1:
                raise Sapiens2Error(f"one checkpoint file cannot serve the tasks {needed}; pass a dict task -> path")
            return {t: model for t in needed}
        raise Sapiens2Error(f"model must be a size such as '0.4b', a name, a path, a model object or a dict, got "
                            f"{type(model).__name__}")

    def _load(self, task: str, spec, rope_dtype: str, cache_dir) -> nn.Module:
        from sapiens2.inference.backends import is_exported_file, load_backend_model

        if self.backend != "torch":
            return load_backend_model(self.backend, task, spec, input_size=self._input_size, device=self.device,
                                      rope_dtype=rope_dtype, cache_dir=cache_dir, export_cache=self._export_cache,
                                      dtype=self.amp_dtype)
        if is_exported_file(spec):
            raise Sapiens2Error(f"{spec} is an exported model: run it with backend='onnxruntime' (--backend "
                                "onnxruntime; backend='aoti' for an AOTInductor .pt2), or give the checkpoint for the "
                                "torch backend")
        if isinstance(spec, nn.Module):
            found = getattr(spec, "task", None)
            if found is not None and found != task:
                raise Sapiens2Error(f"the model given for {task} is a {found} model")
            return spec.to(self.device).eval()
        from sapiens2.checkpoints import load_model  # lazy: the checkpoint machinery is only needed here

        return load_model(spec, task=task, device=self.device, rope_dtype=rope_dtype, cache_dir=cache_dir).eval()

    @staticmethod
    def _input_hw(task: str, model: nn.Module, input_size) -> tuple[int, int]:
        hw = tuple(input_size) if input_size is not None else tuple(getattr(model, "img_size", (1024, 768)))
        backbone = getattr(model, "backbone", None)
        if backbone is not None and hasattr(backbone, "grid_size"):
            grid = backbone.grid_size(*hw)  # raises InputSizeError for sides that are not patch multiples
            head = getattr(model, "decode_head", None)
            if task == "pointmap" and hasattr(head, "check_feature_grid"):
                try:
                    head.check_feature_grid(*grid, image_hw=hw)
                except InputSizeError as exc:
                    raise InputSizeError(f"input_size {hw} does not fit the pointmap model (trained at "
                                         f"{tuple(model.img_size)}): {exc}") from exc
        return int(hw[0]), int(hw[1])

    @property
    def pose_settings(self) -> dict[str, object]:
        """What decides the poses besides the model, as the pose files record it: the crop ``input_size``
        ({height, width}), ``flip_test`` and the ``detector`` (box source); empty without pose."""
        if "pose" not in self.runners:
            return {}
        height, width = self.runners["pose"].input_hw
        return {"input_size": {"height": height, "width": width}, "flip_test": self.flip_test,
                "detector": self.box_source.label if self.box_source is not None else None}

    @property
    def models(self) -> dict[str, nn.Module]:
        return {t: r.model for t, r in self.runners.items()}

    @property
    def input_sizes(self) -> dict[str, tuple[int, int]]:
        """(H, W) model input per task (pose: the crop size)."""
        return {t: r.input_hw for t, r in self.runners.items()}

    # ---- prediction ----
    def predict(self, image: ImageInput | PredictInput, *, boxes=None, source: str | os.PathLike | None = None,
                frame_index: int | None = None) -> Prediction:
        """One image (path, RGB uint8 array, gray / RGBA array or LoadedImage) -> Prediction."""
        if not isinstance(image, PredictInput):
            image = PredictInput(image, source=source, frame_index=frame_index, boxes=boxes)
        return self._predict_group([image])[0]

    __call__ = predict

    #: ``predict_many(..., overlap=True)`` is offered (the batch job asks for it)
    overlaps_batches = True

    def predict_many(self, images: Iterable[ImageInput | PredictInput], *, batch_size: int | None = None,
                     overlap: bool = False) -> Iterator[Prediction]:
        """Predictions in input order, ``batch_size`` images per model forward; the iterable is consumed lazily
        (at most one batch of images is held; two with ``overlap``).

        ``overlap``: on the CPU, the model runs on a worker thread and a batch's post-processing that no later
        forward needs (dense outputs at the image size, seg masks, pose decoding) runs on this thread while the
        model runs on the next batch; each image is yielded as soon as its own part is done (its consumer writes
        its files beside that forward and beside its batch-mates' post-processing; in the last batch, which
        nothing runs beside, that is all the overlap there is). The last batch is post-processed with every
        intra-op thread. A post-processing failure fails only its image (it and the rest of its batch are redone
        one at a time). (Not on an accelerator: there that work is queued on the device behind the forward
        anyway, and the stage clock synchronises the device.)

        An input that fails (unreadable or missing file, bad boxes, a model error on it) does not stop the stream
        or lose its batch-mates: its Prediction has ``error`` set (the exception; ``ok`` is False) and no results.
        """
        size = self.batch_size if batch_size is None else int(batch_size)
        if size < 1:
            raise Sapiens2Error(f"batch_size must be >= 1, got {batch_size}")
        defer = overlap and self.device.type == "cpu"
        if not defer:
            for group in _groups(images, size):
                yield from self._predict_group(group, isolate=True)
            return
        # the model runs on its own thread (the caller's intra-op thread count), so that this thread can
        # post-process and hand out one batch (whose files the caller writes) while the next one is in the model
        with ThreadPoolExecutor(1, thread_name_prefix="s2-model", initializer=torch.set_num_threads,
                                initargs=(torch.get_num_threads(),)) as model:
            behind = None  # the previous batch, past its forward passes: (its items, its post-processing)
            for group in _groups(images, size):
                ahead = model.submit(self._start_group, group, isolate=True)
                if behind is not None:
                    with _beside_forward():
                        yield from self._drain(*behind, ahead)
                behind = (group, ahead.result())
            if behind is not None:  # the last batch: nothing runs beside it, every thread
                yield from self._drain(*behind, None)

    def _drain(self, items: list, finish: Callable[[], Iterator[Prediction]], ahead) -> Iterator[Prediction]:
        """A batch's predictions, each as soon as its post-processing is done. If that fails, the image and the
        rest of the batch are redone one at a time once the model thread is free (``ahead``: the forward running
        there), so only the culprit fails."""
        done = 0
        try:
            for prediction in finish():
                yield prediction
                done += 1
        except Exception as exc:
            log.debug("post-processing failed (%s); redoing %d image(s) one at a time", exc, len(items) - done)
            if ahead is not None:
                ahead.result()
            for item in items[done:]:
                yield self._predict_group([item], isolate=True)[0]

    def _load_input(self, item) -> _Loaded:
        request = item if isinstance(item, PredictInput) else PredictInput(item)
        rgb, found = as_rgb_image(request.image, max_pixels=self.max_pixels)
        src = Path(request.source) if request.source is not None else found
        return _Loaded(rgb, src, request.frame_index, request.boxes)

    @staticmethod
    def _failed(item, error: Exception) -> Prediction:
        request = item if isinstance(item, PredictInput) else PredictInput(item)
        source = request.source
        if source is None and isinstance(request.image, (str, os.PathLike)):
            source = request.image
        return Prediction(image_size=(0, 0), source=None if source is None else Path(source),
                          frame_index=request.frame_index, error=error)

    def _run(self, task: str, inputs: list[np.ndarray]):
        runner = self.runners[task]
        return runner.forward(runner.to_input(inputs))

    @staticmethod
    def _given_boxes(image: _Loaded, seg_mask: np.ndarray | None):
        """(Detections, label) for boxes passed with the image ("seg" = the seg foreground's components)."""
        if image.boxes is None:
            return None
        if isinstance(image.boxes, str):
            if image.boxes.lower() != SEG_BOX_SOURCE:
                raise Sapiens2Error(f"boxes must be an (N, 4) / (N, 5) array, Detections or 'seg', got "
                                    f"{image.boxes!r}")
            if seg_mask is None:
                raise Sapiens2Error("boxes='seg' needs the seg model: add 'seg' to the tasks or use detector='seg'")
            return BoxSource(SEG_BOX_SOURCE, SEG_BOX_SOURCE).boxes(image.rgb, None, seg_mask), SEG_BOX_SOURCE
        return as_detections(image.boxes), "given"

    def _predict_group(self, items: list, *, isolate: bool = False) -> list[Prediction]:
        """Predictions for ``items``; an error raises, or with ``isolate`` becomes that item's failed Prediction
        (a model error on the group is retried one item at a time, so only the culprit fails)."""
        return list(self._start_group(items, isolate=isolate, defer=False)())

    def _start_group(self, items: list, *, isolate: bool, defer: bool = True
                     ) -> Callable[[], Iterator[Prediction]]:
        """``_predict_group`` up to the group's last forward pass; returns the rest: with ``defer``, the
        post-processing that no later forward needs (to run on another thread), yielding each prediction in
        order as soon as its own part is done."""
        clock = StageClock(self.device)
        results: list[Prediction | None] = [None] * len(items)
        loaded: list[tuple[int, _Loaded]] = []
        with clock.stage("load"):
            for i, item in enumerate(items):
                try:
                    loaded.append((i, self._load_input(item)))
                except Exception as exc:
                    if not isolate:
                        raise
                    results[i] = self._failed(item, exc)
        later: _Later | None = _Later() if defer else None
        preds = None
        if loaded:
            try:
                preds = self._predict_loaded([im for _, im in loaded], clock, later)
            except Exception as exc:
                if not isolate:
                    raise
                later = None
                if len(loaded) == 1:
                    preds = [self._failed(items[loaded[0][0]], exc)]
                else:
                    log.debug("batch failed (%s); retrying %d image(s) one at a time", exc, len(loaded))
                    preds = [self._predict_group([items[i]], isolate=True)[0] for i, _ in loaded]

        def finish() -> Iterator[Prediction]:
            share = 0.0  # each image's part of the group's work
            if later is not None and later.group:
                post = StageClock(self.device)
                with post.stage("post"):
                    for work in later.group:
                        work()
                share = post.totals["post"] / len(preds)
            position = {i: k for k, (i, _) in enumerate(loaded)}
            for i in range(len(items)):
                k = position.get(i)
                if k is not None:
                    if later is not None and (later.group or later.each):
                        post = StageClock(self.device)
                        with post.stage("post"):
                            for work in later.each:
                                work(k)
                        preds[k].timings["post"] = preds[k].timings.get("post", 0.0) + share + post.totals["post"]
                    results[i] = preds[k]
                yield results[i]

        return finish

    def _predict_loaded(self, images: list[_Loaded], clock: StageClock, later: _Later | None = None
                        ) -> list[Prediction]:
        for runner in self.runners.values():
            runner.clock = clock
        try:
            return self._predict_images(images, clock, later)
        finally:
            for runner in self.runners.values():
                runner.clock = None

    @staticmethod
    def _post(clock: StageClock, later: _Later | None, work: Callable, images: int = 0) -> None:
        """Post-processing that nothing later in the group needs: now (timed as "post"), or queued in ``later``.
        ``images``: ``work`` takes an image's position and is run for each of that many (else once, no argument)."""
        if later is not None:
            (later.each if images else later.group).append(work)
            return
        with clock.stage("post"):
            if images:
                for k in range(images):
                    work(k)
            else:
                work()

    def _predict_images(self, images: list[_Loaded], clock: StageClock, later: _Later | None = None
                        ) -> list[Prediction]:
        """The group's forward passes, in run order; the post-processing that no later step needs goes through
        :meth:`_post` (into ``later`` when given)."""
        preds = [Prediction(image_size=im.hw, source=im.source, frame_index=im.frame_index) for im in images]
        masks: list[np.ndarray | None] = [None] * len(images)
        seg_logits = None
        masked = [t for t in self.tasks if t in IMAGE_TASKS and IMAGE_TASKS[t].masked_by_seg]

        if "seg" in self.runners:
            hw = self.runners["seg"].input_hw
            with clock.stage("pre"):
                batch = [seg_input(im.rgb, hw) for im in images]
            seg_logits = self._run("seg", batch)

            def seg_mask(i: int, logits=seg_logits) -> None:
                if self.coarse_seg:
                    masks[i] = coarse_argmax(logits[i], images[i].hw, hw[0] * hw[1])
                else:
                    masks[i] = upsampled_argmax(logits[i], images[i].hw).cpu().numpy()

            # the masks are needed now by seg boxes for pose and by the foreground masking of dense tasks
            needed = (bool(masked and self.mask_with_seg) or any(isinstance(im.boxes, str) for im in images)
                      or ("pose" in self.tasks and self.box_source is not None and self.box_source.needs_seg))
            self._post(clock, None if needed else later, seg_mask, len(images))

        person_boxes: list[np.ndarray | None] = [None] * len(images)
        if "pose" in self.tasks:
            pose_items = []
            with clock.stage("pre"):
                for i, im in enumerate(images):
                    given = self._given_boxes(im, masks[i])
                    if given is not None:
                        pose_items.append(PoseImage(im.rgb, *given))
                    else:
                        found = self.box_source.boxes(im.rgb, im.source, masks[i])
                        pose_items.append(PoseImage(im.rgb, found, self.box_source.label))
            hw = self.runners["pose"].input_hw
            pending = start_top_down(self.runners["pose"], pose_items, input_size=(hw[1], hw[0]),
                                     batch_size=self.batch_size, flip_test=self.flip_test,
                                     fallback_whole_image=self.fallback_whole_image, clock=clock)
            person_boxes = list(pending.boxes)

            def pose_results() -> None:
                for i, result in enumerate(pending.finish()):
                    preds[i].pose = result

            self._post(clock, later, pose_results)
        else:
            for i, im in enumerate(images):
                given = self._given_boxes(im, masks[i])
                if given is not None:
                    person_boxes[i] = given[0].boxes

        if "seg" in self.tasks:
            def seg_result(i: int, logits=seg_logits) -> None:
                probs = upsampled_softmax(logits[i], images[i].hw) if self.return_probabilities else None
                inst = instance_masks(masks[i], person_boxes[i]) if person_boxes[i] is not None else None
                preds[i].seg = SegResult(mask=masks[i], probabilities=probs, instance_masks=inst)

            self._post(clock, later, seg_result, len(images))
        del seg_logits

        # the foreground mask is one byte per pixel: made only if a task uses it
        blank = [(m > 0) if (masked and self.mask_with_seg and m is not None) else None for m in masks]
        for task in self.tasks:
            io = IMAGE_TASKS.get(task)
            if io is None:  # seg and pose: done above
                continue
            hw = self.runners[task].input_hw
            with clock.stage("pre"):
                prepared = [io.prepare(im.rgb, hw) for im in images]
            out = self._run(task, [p[0] for p in prepared])

            def task_result(i: int, task=task, io=io, out=out, prepared=prepared) -> None:
                mask = blank[i] if io.masked_by_seg else None
                preds[i].set(task, io.finish(one_image_output(out, i), prepared[i][1], images[i].hw, mask))

            self._post(clock, later, task_result, len(images))
            del out

        share = {name: seconds / len(images) for name, seconds in clock.totals.items()}
        for p in preds:
            p.timings = dict(share)
        return preds

    def __repr__(self) -> str:
        return (f"Predictor(tasks={list(self.tasks)}, backend={self.backend}, device={self.device}, "
                f"dtype={self.amp_dtype or torch.float32}, "
                f"batch_size={self.batch_size}, input_sizes={self.input_sizes})")

