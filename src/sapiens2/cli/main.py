"""``sapiens2`` entry point: one sub-command per module, each exposing ``add_parser`` and ``run``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from sapiens2 import __version__
from sapiens2.cli.common import HelpFormatter, error
from sapiens2.errors import Sapiens2Error, UsageError

# name -> module under sapiens2.cli; imported lazily so `sapiens2 synth` never imports torch models etc.
SUBCOMMANDS = {
    "features": ("features", "write backbone feature maps for images"),
    "predict": ("predict", "run task models (pose, seg, normal, pointmap, albedo, matting) on images/videos"),
    "serve": ("serve", "serve the models over HTTP: an API and a web page (needs sapiens2[serve])"),
    "synth": ("synth", "generate synthetic humans with exact ground truth"),
    "train": ("train", "fine-tune a task model (one process, or many with torchrun)"),
    "distill": ("distill", "distil a teacher into a small real-time student (pose, seg)"),
    "eval": ("eval", "evaluate a task model on a dataset with the published metrics"),
    "pretrain": ("pretrain", "pretrain a backbone: masked reconstruction + self-distillation"),
    "curate": ("curate", "curate an image collection into pretraining shards (Ray Data)"),
    "benchmark": ("benchmark", "time the models per backend, precision and batch size (JSON + Markdown table)"),
    "export": ("export", "export a model to ONNX (int8 too), torch.export .pt2, AOTInductor or TensorRT"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sapiens2",
        description="Sapiens2 human-centric vision models.",
        epilog="examples:\n  sapiens2 features photo.jpg -o out/\n  sapiens2 predict --task pose,seg photo.jpg -o out/\n"
               "  sapiens2 synth --num 100 -o synth/\n"
               "  sapiens2 train --task seg --data synth/ --model sapiens2-pretrain-0.4b\n"
               "  sapiens2 curate photos/ -o curated/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        mod = importlib.import_module(f"sapiens2.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def _configure_logging(verbose: bool) -> None:
    """At most one handler of ours on the root logger, whatever the number of main() calls in one process
    (tests, notebooks), and none where the host already shows log records (a second would repeat each line)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_sapiens2", False)]
    if not ours and not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._sapiens2 = True
        root.addHandler(handler)
    for handler in ours:  # the stream of an earlier call may be gone (pytest's capture, a closed notebook cell)
        handler.setStream(sys.stderr)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def quiet_native_logs() -> None:
    """Keep OpenCV's and FFmpeg's own log lines ("[ WARN:0@0.2] ... PNG input buffer is incomplete", "moov atom not
    found") off the terminal: the commands report unreadable inputs themselves, with the path and the reason.
    The user's own OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL win (and --verbose keeps everything)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read when FFmpeg is first used
    if "OPENCV_LOG_LEVEL" not in os.environ:
        os.environ["OPENCV_LOG_LEVEL"] = "ERROR"  # read when cv2 is imported...
        if "cv2" in sys.modules:  # ...so set it directly when that already happened
            sys.modules["cv2"].utils.logging.setLogLevel(sys.modules["cv2"].utils.logging.LOG_LEVEL_ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen sub-command's module (fast start, and a broken optional module
    # cannot take the others down).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(only=chosen)
    # parse_known_args + the sub-command's own error(): argparse would report a stray argument of a sub-command
    # from the top-level parser, under the top-level usage line.
    args, extra = parser.parse_known_args(argv)
    sub = getattr(args, "_parser", None)
    if extra:
        (sub or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose)
    if not args.verbose:
        quiet_native_logs()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:  # a bad option value found after parsing: same form and status as argparse's
        sub.print_usage(sys.stderr)
        error(args.command, str(exc))
        return 2
    except Sapiens2Error as exc:  # a reported failure (model not available, bad checkpoint, ...), no traceback
        error(args.command, str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
