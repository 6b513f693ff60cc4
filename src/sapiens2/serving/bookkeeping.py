"""The predict job's bookkeeping types: what it is given (inputs, video options, the predictor's interface),
what it plans (which inputs are already done) and what it reports (per-input failures, per-video reports, the
job summary). No model, no threads: the CLI plans with these before any model is loaded."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sapiens2.errors import failure_reason
from sapiens2.io import InputItem
from sapiens2.tasks.results import Prediction

from .completion import is_complete
from .naming import output_bases
from .outputs import OutputOptions, image_outputs, order_tasks, video_outputs


class PredictorLike(Protocol):
    def predict(self, image: Any) -> Prediction: ...
    def predict_many(self, images: Iterable[Any]) -> Iterator[Prediction]: ...


@dataclass
class InputFailure:
    path: Path
    reason: str


def discovery_failures(found) -> list[InputFailure]:
    """The given paths that yield no input (:class:`~sapiens2.io.DiscoveredInputs`), each a failed input of the
    job: missing paths, files that are not images or videos, folders holding none."""
    return ([InputFailure(p, "does not exist") for p in found.missing]
            + [InputFailure(p, "not an image or video file extension") for p in found.unsupported]
            + [InputFailure(p, f"no images or videos found in {p}") for p in found.empty_folders])


@dataclass(frozen=True)
class SourceItem:
    """A video input that is not a plain file found by discovery: a camera, a stream URL or an image-sequence
    folder (``--source``). Quacks like :class:`~sapiens2.io.InputItem` (``path``, ``relative``, ``is_video``)."""

    spec: Any  # sapiens2.video.sources.SourceSpec

    kind = "video"
    is_video = True

    @property
    def path(self) -> Path:
        return Path(self.spec.display)

    @property
    def relative(self) -> Path:
        return Path(self.spec.stem)

    @property
    def live(self) -> bool:
        return bool(self.spec.live)


@dataclass(frozen=True)
class VideoOptions:
    """How videos are read and post-processed.

    ``start`` / ``end``: first frame and the frame to stop before, as a source frame index (int) or a text for
    :func:`~sapiens2.video.sources.parse_position` (``"12.5"`` s, ``"1:30"``, ``"300f"``). ``max_frames``: stop
    after this many processed frames (cameras and streams never end on their own). ``track``: track ids for the
    people. ``smoothing``: ``"none"``, ``"light"`` or ``"strong"``. ``prefetch``: frames decoded ahead on a thread
    (0: decode in the model's thread). ``frame_files``: write the per-frame data files. ``fps``: frame rate of
    image-sequence folders (and an override for sources that report none).
    """

    start: int | str | None = None
    end: int | str | None = None
    max_frames: int | None = None
    track: bool = True
    smoothing: str = "light"
    prefetch: int = 8
    frame_files: bool = True
    fps: float | None = None


@dataclass
class VideoReport:
    """What happened to one video (also written to its ``.summary.json``)."""

    source: str
    frames: int = 0
    people: int = 0  # person detections summed over frames
    tracks: int = 0
    wall_s: float = 0.0
    wait_s: float = 0.0  # time the model waited for decoded frames
    issues: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def idle_share(self) -> float:
        return self.wait_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class JobSummary:
    """What a job did. ``images``/``frames`` count predictions made; ``stage_s`` sums ``Prediction.timings``."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[InputFailure] = field(default_factory=list)
    images: int = 0
    frames: int = 0
    people: int = 0  # people the pose boxes came for (detector, boxes file, seg); whole-image fallbacks not included
    whole_image_fallbacks: int = 0  # images/frames where no person was found and pose used the whole image
    files_written: int = 0
    wall_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    videos: list[VideoReport] = field(default_factory=list)
    interrupted: bool = False

    @property
    def predictions(self) -> int:
        return self.images + self.frames

    @property
    def per_second(self) -> float:
        return self.predictions / self.wall_s if self.wall_s > 0 else 0.0

    def add_timings(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + float(seconds)

    # Stages in pipeline order. "read" (reading and decoding files) and "write" (encoding and writing outputs) run
    # on worker threads beside the model: their seconds are the workers' busy time, not the job's; "wait_read" and
    # "wait_write" are the seconds the job's thread waited for them (zero when the pools keep up).
    STAGES = (("read", "read"), ("load", "load"), ("pre", "preprocess"), ("forward", "forward"),
              ("post", "postprocess"), ("write", "write"), ("wait_read", "waited for reads"),
              ("wait_write", "waited for writes"))

    def stage_line(self) -> str | None:
        """``stages: read 0.41 s, preprocess 0.30 s, ...`` (known stages in pipeline order, then any others)."""
        if not self.stage_s:
            return None
        names = dict(self.STAGES)
        order = [k for k, _ in self.STAGES if k in self.stage_s] + sorted(set(self.stage_s) - set(names))
        return "stages: " + ", ".join(f"{names.get(k, k)} {self.stage_s[k]:.2f} s" for k in order)

    def lines(self) -> list[str]:
        """A human summary, failures listed with their reasons."""
        fallbacks = (f"; no person found, whole image used: {self.whole_image_fallbacks}"
                     if self.whole_image_fallbacks else "")
        out = [f"inputs: {self.total} ({self.done} done, {self.skipped} skipped, {len(self.failed)} failed)",
               f"predicted: {self.images} image(s), {self.frames} video frame(s); people found: {self.people}"
               + fallbacks,
               f"time: {self.wall_s:.1f} s, {self.per_second:.2f} images/s; files written: {self.files_written}"]
        if self.stage_line():  # time per stage (issue 20)
            out.append(self.stage_line())
        for video in self.videos:
            out.append(f"video {video.source}: {video.frames} frame(s), {video.tracks} track(s), "
                       f"{video.frames_per_second:.2f} frames/s, model waiting for frames "
                       f"{100 * video.idle_share:.1f}% of the time" + (" (interrupted)" if video.interrupted else ""))
            out += [f"  issue: {issue}" for issue in video.issues]
        if self.interrupted:
            out.append("interrupted: the inputs after the current one were not processed")
        if self.failed:
            out.append("failed inputs:")
            out += [f"  {f.path}: {f.reason}" for f in self.failed]
        return out


class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def progress_bar(enabled: bool, total: int | None):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1)


class RunningJob(Protocol):
    """What the image and video pipelines (:mod:`.image_batches`, :mod:`.video_job`) use of the running
    :class:`~sapiens2.serving.runner.PredictJob`: a protocol here, so they need not import the job."""

    predictor: PredictorLike
    boxes_for: Callable[[InputItem], Any] | None
    open_capture: Callable[[Any], Any] | None
    read_workers: int
    max_pending: int

    @property
    def tasks(self) -> list[str]: ...
    @property
    def options(self) -> OutputOptions: ...
    @property
    def every(self) -> int: ...
    @property
    def video(self) -> VideoOptions: ...
    @property
    def max_pixels(self) -> int | None: ...
    def item_settings(self, item) -> dict[str, Any]: ...
    def expected_outputs(self, item, base: Path) -> list[Path]: ...
    def record_failure(self, summary: JobSummary, path: Path, exc: BaseException | str) -> None: ...
    def count_prediction(self, summary: JobSummary, prediction: Prediction, video: Path | None = None) -> None: ...


@dataclass(frozen=True)
class JobPlan:
    """What decides a job's outputs, and so which inputs are already done: the tasks (in the canonical order), the
    output folder and options, ``every`` (video frame step), the video options and the other ``settings`` (model
    identities, input size, ...) that go into each input's completion record."""

    tasks: tuple[str, ...]
    output_dir: Path
    options: OutputOptions = field(default_factory=OutputOptions)
    overwrite: bool = False
    every: int = 1
    video: VideoOptions = field(default_factory=VideoOptions)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, tasks: Sequence[str], output_dir: str | Path, options: OutputOptions | None = None, *,
             overwrite: bool = False, every: int = 1, video: VideoOptions | None = None,
             settings: Mapping[str, Any] | None = None) -> JobPlan:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        return cls(tuple(order_tasks(tasks)), Path(output_dir), options or OutputOptions(), overwrite, every,
                   video or VideoOptions(), dict(settings or {}))

    def with_pose_settings(self, predictor: Any) -> JobPlan:
        """The plan whose pose files say how they were made (crop size, flip test, detector: the predictor's
        ``pose_settings``), unless the options already say it or there is no pose."""
        described = getattr(predictor, "pose_settings", None)
        if "pose" not in self.tasks or not isinstance(described, Mapping) or self.options.pose_settings:
            return self
        return replace(self, options=replace(self.options, pose_settings=dict(described)))

    def item_settings(self, item) -> dict[str, Any]:
        """Everything that decides an input's outputs, as its completion record keeps it."""
        settings = {**self.settings, "tasks": list(self.tasks), "seg_probabilities": self.options.seg_probabilities,
                    "ply_max_points": self.options.ply_max_points}
        if item.is_video:  # frame selection and post-processing only change videos
            v = self.video
            settings.update(every=self.every, start=v.start, end=v.end, max_frames=v.max_frames, track=v.track,
                            smoothing=v.smoothing, frame_files=v.frame_files, fps=v.fps)
        return settings

    def expected_outputs(self, item, base: Path) -> list[Path]:
        return video_outputs(base, self.tasks) if item.is_video else image_outputs(base, self.tasks, self.options)

    def plan(self, items: Sequence[InputItem]) -> list[tuple[InputItem, Path, bool]]:
        """(item, output base, already done) for every input."""
        plan = []
        for item, base in zip(items, output_bases(items, self.output_dir)):
            live = isinstance(item, SourceItem) and item.live  # a camera is never "already done"
            done = not (self.overwrite or live) and is_complete(base, item.path, self.expected_outputs(item, base),
                                                                self.item_settings(item))
            plan.append((item, base, done))
        return plan


def predict_input(image: Any, *, source: Path | None = None, frame_index: int | None = None, boxes: Any = None):
    """What the predictor is fed: a :class:`~sapiens2.inference.predictor.PredictInput` (imported lazily: torch)."""
    from sapiens2.inference.predictor import PredictInput

    return PredictInput(image, source=source, frame_index=frame_index, boxes=boxes)



__all__ = ["InputFailure", "JobPlan", "JobSummary", "PredictorLike", "RunningJob", "SourceItem", "VideoOptions",
           "VideoReport", "failure_reason", "predict_input", "progress_bar"]
