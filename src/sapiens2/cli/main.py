"""``sapiens2`` entry point: one sub-command per module, each exposing ``add_parser`` and ``run``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# name -> module under sapiens2.cli; imported lazily so `sapiens2 synth` never imports torch models etc.
SUBCOMMANDS = {
    "features": ("features", "write backbone feature maps for images"),
    "predict": ("predict", "run task models (pose, seg, normal, pointmap, albedo, matting) on images/videos"),
    "synth": ("synth", "generate synthetic humans with exact ground truth"),
    "train": ("train", "fine-tune a task model (one process, or many with torchrun)"),
    "eval": ("eval", "evaluate a task model on a dataset with the published metrics"),
    "pretrain": ("pretrain", "pretrain a backbone: masked reconstruction + self-distillation"),
    "curate": ("curate", "curate an image collection into pretraining shards (Ray Data)"),
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        mod = importlib.import_module(f"sapiens2.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not args.verbose:
        quiet_native_logs()
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
