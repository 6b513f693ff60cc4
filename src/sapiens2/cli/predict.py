"""``sapiens2 predict``: run task models on images, folders and videos and write per-task files."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sapiens2.cli.common import add_dtype, error, parse_hw
from sapiens2.cli.live import add_live_options, check_live_options, run_live_command
from sapiens2.cli.predict_ray import add_engine_options, check_engine_options, run_ray
from sapiens2.errors import UsageError  # a bad command line: reported under the usage line, exit status 2
from sapiens2.models.heads.task_table import resolve_task, resolve_tasks, task_names

logger = logging.getLogger(__name__)

TASKS = task_names()
USAGE_ERROR = 2
INTERRUPTED = 130  # the shell's code for Ctrl-C; what was processed is published

EPILOG = """\
examples:
  sapiens2 predict --task pose photo.jpg -o out/
  sapiens2 predict --task pose,seg,normal --model 1b photos/ clip.mp4 -o out/
  sapiens2 predict --checkpoint seg=./sapiens2_0.4b_seg.safetensors --checkpoint ./my_pose.safetensors in/ -o out/
  sapiens2 predict --task pointmap --device cuda --dtype bfloat16 --batch-size 8 photos/ -o out/
  sapiens2 predict --task pose --boxes coco_person_boxes.json photos/ -o out/
  sapiens2 predict --task seg,matting --every 5 clip.mp4 -o out/
  sapiens2 predict --task pose --smooth light --start 10 --end 1:30 clip.mp4 -o out/
  sapiens2 predict --task pose --source 0 --max-frames 300 -o out/          (webcam; Ctrl-C stops and keeps)
  sapiens2 predict --task pose,pointmap --source rtsp://camera.local/stream -o out/
  sapiens2 predict --task pose --source frames_folder/ --fps 25 -o out/      (an image sequence as a video)
  sapiens2 predict --task pose,seg --source 0 --live --record live.mp4 -o out/  (drops frames to keep up)

outputs (per input, mirroring the input folders; B = <out>/<relative path without extension>):
  pose      B.pose.json (308 named keypoints [x, y, score] per person + COCO-17, COCO-WholeBody-133,
            OpenPose BODY_25 / hands / face views), B.pose.png
  seg       B.seg.png (8-bit class ids), B.seg_vis.png, B.seg_probs.npy with --seg-probs (float16, 29xHxW)
  normal    B.normal.npy (float32 HxWx3), B.normal.png
  pointmap  B.pointmap.npy (float32 HxWx3, metres), B.depth.png (16-bit mm, 0 = no data), B.depth_vis.png,
            B.ply (coloured foreground point cloud)
  albedo    B.albedo.png          matting   B.alpha.png, B.cutout.png (RGBA)
  videos    B.<task>.mp4 per task (pose: track colours, smoothed points), B.pose.jsonl (header line, then one
            line per frame: time stamp, frame index, per person track_id, box, keypoints smoothed and raw),
            B.frames.jsonl (pointmap without pose: per-frame scale), B.summary.json (frames, people, tracks,
            frames/s, issues), and the data files of each frame as B/<frame:06d>.<suffix> (--no-frame-files: none)

Inputs done by an earlier run with the same settings are skipped (B.done.json records it; --overwrite redoes
them); our own outputs inside an input folder are not read as inputs. Failed inputs are reported and skipped;
the exit status is 1 only if no input succeeded, 2 for usage errors."""


def add_parser(p: argparse.ArgumentParser) -> None:
    p.usage = "%(prog)s [--task TASKS] [--model SIZE|NAME] [--checkpoint [TASK=]PATH] [options] INPUT... -o OUT"
    p.epilog = EPILOG
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (searched recursively), videos")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created if needed)")
    add_model_options(p)
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="images per forward pass")
    p.add_argument("--boxes", default=None, metavar="FILE|DIR",
                   help="person boxes for pose from a COCO JSON file or a folder of <image stem>.json files "
                        '({"boxes": [[x1, y1, x2, y2, score], ...]}); images without an entry use --detector')
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: process every N-th frame (default 1)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images (and video frames) with more than N pixels, checked from the file header "
                        "before decoding; such inputs fail alone (default 100000000, 0 = no limit)")
    video = p.add_argument_group("video")
    video.add_argument("--source", action="append", default=[], metavar="SRC",
                       help="a video source besides the INPUTs (repeatable): a camera index (0), a stream URL "
                            "(rtsp://, http://, ...), a folder of frames read as one video, or a video file")
    video.add_argument("--start", default=None, metavar="POS",
                       help="videos: first frame to process, in seconds (12.5), m:s (1:30) or frames (300f)")
    video.add_argument("--end", default=None, metavar="POS",
                       help="videos: stop before this position (same forms as --start)")
    video.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="videos: stop after N processed frames (cameras and streams run until Ctrl-C otherwise)")
    video.add_argument("--smooth", default="light", choices=("none", "light", "strong"),
                       help="videos: temporal smoothing of keypoints (One-Euro), pointmap scale and person depth "
                            "(default light; raw values are kept next to the smoothed ones)")
    video.add_argument("--track", action=argparse.BooleanOptionalAction, default=True,
                       help="videos: give people stable track ids (default on; smoothing per person needs it)")
    video.add_argument("--fps", type=float, default=None,
                       help="frame rate of a folder of frames (default 30), or for sources that report none")
    video.add_argument("--frame-files", action=argparse.BooleanOptionalAction, default=True,
                       help="videos: write the per-frame data files B/<frame>.<suffix> (default on)")
    add_live_options(p)  # live mode: its own group and module (cli/live.py)
    speed = p.add_argument_group("speed")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the models, once per batch shape (default off: on a CPU compiling takes "
                            "minutes per model; measure the gain with sapiens2 benchmark --backend torch-compile)")
    speed.add_argument("--compile-mode", default=None, metavar="MODE",
                       help="with --compile: default, reduce-overhead (CUDA graphs; the default on CUDA), "
                            "max-autotune, max-autotune-no-cudagraphs")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    add_engine_options(p)  # --engine ray and its options
    deploy = p.add_argument_group("deployment")
    deploy.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "aoti", "tensorrt"),
                        help="runtime: torch (default), onnxruntime (a --checkpoint TASK=model.onnx from `sapiens2 "
                             "export`, or the model exported once into ~/.cache/sapiens2/exports; needs "
                             "sapiens2[onnx]), aoti (an AOTInductor .pt2 from `sapiens2 export --format aoti`, or "
                             "the model compiled once into that cache; compiling needs a C++ compiler)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options that choose and load the models, shared by ``predict`` and ``serve`` (one definition, so the
    two commands spell and check them alike); :func:`resolve_models` turns them into what to load."""
    p.add_argument("-t", "--task", action="append", default=[], metavar="TASKS",
                   help=f"comma-separated tasks: {', '.join(TASKS)} (repeatable; default: the tasks of the "
                        "--checkpoint files)")
    p.add_argument("-m", "--model", default=None, metavar="SIZE|NAME",
                   help="published model size or name for tasks without --checkpoint, e.g. 0.4b, 1b, "
                        "sapiens2-pose-1b (default 0.4b; downloaded once into the Hugging Face cache)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="[TASK=]PATH",
                   help="local checkpoint file for a task (repeatable); without TASK= the task is read from the "
                        "file's keys")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps",
                   help="where to run (default auto: cuda, then mps, then cpu)")
    add_dtype(p, "float32", help="compute dtype (default float32; bfloat16/float16 are faster on GPUs)")
    p.add_argument("--flip-test", action="store_true",
                   help="pose only: average with the horizontally flipped crop (2x pose time)")
    p.add_argument("--detector", default=None, metavar="rtdetr[:NAME|PATH]|hog|seg|onnx:PATH|none",
                   help="person boxes for pose: rtdetr (default: RT-DETR PekingU/rtdetr_r50vd, fetched once into "
                        "the Hugging Face cache; rtdetr:ORG/NAME or rtdetr:FOLDER for another), hog (OpenCV, "
                        "shipped, no download; upright full-body people only), seg (from a body-part segmentation), "
                        "onnx:PATH (your YOLOv8 / RTMDet ONNX model), none (whole image)")
    p.add_argument("--seg-probs", action="store_true", help="also write seg class probabilities (float16 .npy)")
    p.add_argument("--input-size", default=None, metavar="HxW",
                   help="advanced: model input size, e.g. 1024x768 (default: the size the model was trained at)")


# ---------------------------------------------------------------------------------------------- argument parsing
def parse_tasks(values: list[str]) -> list[str]:
    return resolve_tasks(values)  # UnknownTaskError is a UsageError: reported under the usage line


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    return parse_hw(text)


DETECTORS = "rtdetr[:NAME|PATH], hog, seg, onnx:PATH or none"


def check_detector(text: str | None) -> None:
    """Reject a --detector the command line does not offer (the Python API takes more, e.g. objects)."""
    if text is None:
        return
    key = text.strip().lower()
    if key in ("auto", "rtdetr", "hog", "seg", "none"):
        return
    if key.startswith("rtdetr:"):
        from sapiens2.checkpoints.detector_files import is_repo_id

        ref = text.strip()[7:].strip()
        if not ref or (not Path(ref).expanduser().is_dir() and not is_repo_id(ref)):
            raise UsageError(f"--detector {text!r}: name a hub repo (e.g. rtdetr:PekingU/rtdetr_r50vd) or a folder "
                             "holding a saved RT-DETR")
        return
    if key.startswith("onnx:"):
        if not Path(text.strip()[5:]).expanduser().is_file():
            raise UsageError(f"--detector {text!r}: no ONNX file at {text.strip()[5:]!r}")
        return
    raise UsageError(f"unknown --detector {text!r}: use {DETECTORS}")


def check_compile(compile_: bool, mode: str | None) -> None:
    from sapiens2.inference.compile import COMPILE_MODES

    if mode is not None and not compile_:
        raise UsageError(f"--compile-mode {mode} needs --compile")
    if mode is not None and mode not in COMPILE_MODES:
        raise UsageError(f"--compile-mode {mode!r}: use one of {', '.join(COMPILE_MODES)}")


def check_span(start: str | None, end: str | None) -> None:
    """--end must come after --start when both are in the same unit (frames, or time); mixed units need the
    video's frame rate and are checked per video."""
    from sapiens2.video.sources import parse_position

    if start is None or end is None:
        return
    frames = [text.strip().lower().endswith("f") for text in (start, end)]
    if frames[0] != frames[1]:
        return
    if parse_position(end, 1000.0) <= parse_position(start, 1000.0):
        raise UsageError(f"--end {end} is not after --start {start}")


def parse_sources(values: list[str]):
    """``--source`` texts -> SourceSpecs (camera index, stream URL, folder of frames, video file)."""
    from sapiens2.video.sources import parse_source

    specs = []
    for value in values:
        try:
            specs.append(parse_source(value))
        except ValueError as exc:
            raise UsageError(f"--source {value!r}: {exc}") from None
    return specs


def check_position(text: str | None, option: str) -> None:
    """Reject a --start/--end text that cannot be read (the frame rate is not needed to check the form)."""
    from sapiens2.video.sources import parse_position

    try:
        parse_position(text, 30.0)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _checkpoint_task(path: Path) -> str:
    """The task of a checkpoint file, from its head's keys (memory-mapped: nothing is loaded); of an exported file
    (.onnx/.pt2/.engine), from its metadata."""
    if path.suffix.lower() in (".onnx", ".pt2", ".engine"):
        from sapiens2.export import read_export_metadata

        return read_export_metadata(path).task
    from sapiens2.checkpoints import read_official_state_dict
    from sapiens2.models.heads import infer_task

    return infer_task(read_official_state_dict(path))


def parse_checkpoints(specs: list[str]) -> dict[str, Path]:
    """``[TASK=]PATH`` strings (PATH a checkpoint file or save_pretrained folder) -> {task: path}; the task comes from
    the file when not given."""
    found: dict[str, Path] = {}
    for spec in specs:
        task, path_text = None, spec
        if "=" in spec and not Path(spec).exists():
            task_text, path_text = spec.split("=", 1)
            task = resolve_task(task_text)
        path = Path(path_text).expanduser()
        if not path.exists():  # a file, or a transformers save_pretrained folder
            raise UsageError(f"--checkpoint {spec!r}: file {str(path)!r} does not exist")
        inferred = _checkpoint_task(path)
        if task is not None and inferred != task:
            raise UsageError(f"--checkpoint {spec!r}: the file holds a {inferred} model, not {task}")
        task = task or inferred
        if task in found:
            raise UsageError(f"two checkpoints for {task}: {found[task]} and {path}")
        found[task] = path
    return found


def resolve_models(args: argparse.Namespace, tasks: list[str]) -> tuple[list[str], dict]:
    """The options of :func:`add_model_options` -> (tasks, {task: checkpoint path or published name}) to load;
    ``tasks`` (parsed ``--task``, may be empty: then the checkpoints' tasks). The dict may hold seg besides the
    tasks (``--detector seg`` needs it). Raises UsageError for options that contradict each other, Sapiens2Error
    for an unreadable checkpoint file."""
    checkpoints = parse_checkpoints(args.checkpoint)
    if not tasks:
        tasks = list(checkpoints)
    if not tasks:
        raise UsageError("say which task(s) to run with --task (e.g. --task pose,seg) or give --checkpoint files")
    # pose boxes from the seg foreground need the seg model even when seg outputs are not asked for
    seg_for_boxes = "pose" in tasks and (args.detector or "").lower() == "seg" and "seg" not in tasks
    stray = [t for t in checkpoints if t not in tasks and not (t == "seg" and seg_for_boxes)]
    if stray:
        raise UsageError(f"--checkpoint given for {', '.join(stray)} but --task is {','.join(tasks)}")
    if seg_for_boxes and "seg" not in checkpoints and "pose" in checkpoints and args.model is None:
        # a published seg model would be downloaded behind the back of someone who gave their own pose model
        raise UsageError("--detector seg finds people with a seg model, and none was given: add "
                         "--checkpoint seg=PATH (or --model SIZE|NAME for a published one), or choose another "
                         "--detector (rtdetr, hog, onnx:PATH or none)")
    model = args.model or "0.4b"
    models = {task: checkpoints.get(task, model) for task in tasks}
    if seg_for_boxes:
        models["seg"] = checkpoints.get("seg", model)
        if "seg" not in checkpoints:
            logger.info("--detector seg: person boxes come from the seg model %s", _model_name(model, "seg"))
    return tasks, models


# ---------------------------------------------------------------------------------------------- running
def _check_output_dir(folder: Path) -> None:
    from sapiens2.io import OutputWriteError, ensure_directory

    ensure_directory(folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputWriteError(folder, "output directory is not writable")


def _model_name(spec, task: str) -> str:
    """What the pose JSON header records as the model: the checkpoint file's name or the published name."""
    if isinstance(spec, Path):
        return spec.name
    try:
        from sapiens2.checkpoints.registry import resolve_model_name

        return resolve_model_name(str(spec), task=task).name
    except Exception:  # an unknown name fails later, at load time, with the loader's message
        return str(spec)


def _model_identity(spec, task: str) -> dict:
    """What names a model in completion records: a file by name, size and time (retrained = redone), else its name."""
    if isinstance(spec, Path):
        stat = spec.stat()
        return {"file": spec.name, "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}
    return {"name": _model_name(spec, task)}


def output_settings(args: argparse.Namespace, models: dict, input_size) -> dict:
    """The options besides the job's own (tasks, video options) that change what an input's outputs hold."""
    settings = {"models": {t: _model_identity(m, t) for t, m in sorted(models.items())},
                "input_size": list(input_size) if input_size else None, "dtype": args.dtype}
    if getattr(args, "backend", "torch") != "torch":  # another runtime: outputs differ by rounding
        settings["backend"] = args.backend
    if "pose" in models:  # these change poses only: other tasks' outputs stay valid when they change
        from sapiens2.inference.detectors import detector_setting  # the default spelled out: RT-DETR, not HOG

        settings.update(flip_test=bool(args.flip_test), detector=detector_setting(args.detector),
                        boxes=None if args.boxes is None else str(Path(args.boxes).resolve()))
    return settings


def build_predictor(args: argparse.Namespace, tasks: list[str], models: dict, input_size):
    """The real Predictor for the parsed options (imports torch; may download published weights)."""
    from sapiens2.inference.predictor import Predictor

    kwargs = dict(model=models, device=args.device, dtype=args.dtype, flip_test=args.flip_test,
                  input_size=input_size, return_probabilities=args.seg_probs)
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    if args.detector is not None:
        kwargs["detector"] = args.detector
    if getattr(args, "max_pixels", None) is not None:
        kwargs["max_pixels"] = args.max_pixels
    if getattr(args, "compile", False):
        kwargs["compile"] = args.compile_mode or True
    if getattr(args, "backend", "torch") != "torch":
        kwargs["backend"] = args.backend
    if getattr(args, "live", False):  # the seg mask is only drawn in live mode: a preview (Predictor's coarse_seg)
        kwargs["coarse_seg"] = True
    return Predictor(tasks, **kwargs)


def run(args: argparse.Namespace) -> int:
    """Usage errors propagate as UsageError: ``sapiens2`` reports them under this command's usage, status 2."""
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from sapiens2.errors import InputSizeError, Sapiens2Error
    from sapiens2.io import OutputWriteError, discover_inputs
    from sapiens2.serving import OutputOptions, PredictJob
    from sapiens2.serving.bookkeeping import discovery_failures
    from sapiens2.serving.completion import own_output_filter
    from sapiens2.serving.runner import JobPlan, SourceItem, VideoOptions

    tasks = parse_tasks(args.task)
    sources = parse_sources(args.source)
    check_engine_options(args)
    if not args.inputs and not sources:
        raise UsageError("give at least one INPUT (image, folder, video) or --source")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps must be > 0, got {args.fps}")
    for name in ("start", "end"):
        check_position(getattr(args, name), f"--{name}")
    check_span(args.start, args.end)
    check_detector(args.detector)
    check_live_options(args, sources)
    input_size = parse_input_size(args.input_size)
    check_compile(args.compile, args.compile_mode)
    if args.every < 1:
        raise UsageError(f"--every must be >= 1, got {args.every}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise UsageError(f"--max-pixels must be >= 0 (0 = no limit), got {args.max_pixels}")
    if args.boxes is not None and not Path(args.boxes).exists():
        raise UsageError(f"--boxes {args.boxes!r} does not exist (give a COCO JSON file or a folder)")
    try:
        tasks, models = resolve_models(args, tasks)
    except UsageError:
        raise
    except Sapiens2Error as exc:  # an unreadable checkpoint file
        error("predict", str(exc))
        return 1
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {args.output!r} is a file; give a folder for the outputs")
    if args.engine == "ray":  # the workers load the models and resolve --device where they run
        options = OutputOptions(seg_probabilities=args.seg_probs,
                                model_names={t: _model_name(m, t) for t, m in models.items()})
        return run_ray(args, tasks, models, input_size, build_predictor, options,
                       output_settings(args, models, input_size))
    from sapiens2.runtime import resolve_device
    resolve_device(args.device)  # an unavailable --device fails here, before any input is read or model loaded
    if getattr(args, "backend", "torch") != "torch":  # a --dtype the backend cannot run: before any work
        from sapiens2.inference.backends import check_backend
        check_backend(args.backend, args.dtype)
    try:
        _check_output_dir(output)
    except OutputWriteError as exc:
        error("predict", str(exc))
        return 1
    if args.live:  # one source at the rate the model keeps up with (sapiens2.cli.live)
        return run_live_command(args, tasks, models, input_size, sources, build_predictor)

    found = discover_inputs(args.inputs, exclude=own_output_filter(output))
    found.items.extend(SourceItem(spec) for spec in sources)
    failures = discovery_failures(found)  # missing paths, other files, folders holding no image or video
    if not found.items:
        for f in failures:
            print(f"sapiens2 predict: {f.path}: {f.reason}", file=sys.stderr)
        error("predict", "no images or videos found in the inputs")
        return 1

    options = OutputOptions(seg_probabilities=args.seg_probs,
                            model_names={t: _model_name(m, t) for t, m in models.items()})
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    video = VideoOptions(start=args.start, end=args.end, max_frames=args.max_frames, track=args.track,
                         smoothing=args.smooth, frame_files=args.frame_files, fps=args.fps)
    settings = output_settings(args, models, input_size)
    plan = JobPlan.make(tasks, output, options, overwrite=args.overwrite, every=args.every, video=video,
                        settings=settings)
    predictor = boxes_for = None  # no model is loaded when every input already has its outputs
    if all(done for _, _, done in plan.plan(found.items)):
        logger.info("all %d input(s) already have their outputs; nothing to do (use --overwrite to redo)",
                    len(found.items))
    else:
        try:
            boxes_for = _boxes_lookup(args.boxes)
            predictor = build_predictor(args, tasks, models, input_size)
        except (UsageError, InputSizeError) as exc:  # e.g. an input size the model's tokenizer cannot tile
            raise UsageError(str(exc)) from exc
        except Sapiens2Error as exc:  # model not available offline, bad checkpoint, ...
            error("predict", str(exc))
            return 1
    job = PredictJob(predictor, tasks, output, options, overwrite=args.overwrite, every=args.every,
                     progress=progress, video=video, settings=settings, boxes_for=boxes_for)
    summary = job.run(found.items, failures)
    for line in summary.lines():
        print(line)
    if summary.interrupted:
        return INTERRUPTED
    succeeded = summary.done + summary.skipped
    return 0 if succeeded > 0 else 1


def _boxes_lookup(boxes_path: str | None):
    """Person boxes for an input from ``--boxes`` (None when the file/folder has nothing for it)."""
    if boxes_path is None:
        return None
    from sapiens2.tasks.detection import BoxFileSource

    source = BoxFileSource(boxes_path)

    def boxes_for(item):
        found = source.boxes_for(item.relative)  # COCO file_name relative to the input folder
        return found if found is not None else source.boxes_for(item.path)

    return boxes_for
