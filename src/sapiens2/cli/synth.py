"""``sapiens2 synth``: write a synthetic-humans dataset and/or a preview contact sheet."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_progress, progress_enabled

logger = logging.getLogger(__name__)
PREVIEW_SAMPLES = 16


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--num", type=int, default=None,
                   help="number of samples to write (default 1000; with --preview, none unless given)")
    p.add_argument("--seed", type=int, default=0, help="random stream; the same seed gives identical data")
    p.add_argument("--height", type=int, default=256, help="image height (default 256)")
    p.add_argument("--width", type=int, default=192, help="image width (default 192)")
    p.add_argument("--max-people", type=int, default=4, help="at most this many people per image (default 4)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per CPU core this process may use)")
    p.add_argument("--preview", action="store_true",
                   help=f"write OUTPUT/preview.png: {PREVIEW_SAMPLES} samples with keypoints, parts, normals, depth")
    add_progress(p)
    p.epilog = ("examples:\n  sapiens2 synth --num 1000 -o synth/\n  sapiens2 synth --preview -o synth/\n"
                "On-disk format: see sapiens2.data.synth.writer.")


def default_workers(num: int) -> int:
    """One process per usable core (the affinity mask, which containers and taskset narrow), never more than
    samples: rendering is CPU-bound and samples are independent."""
    from sapiens2.runtime import usable_cores

    return max(1, min(usable_cores(), num))


def run(args: argparse.Namespace) -> int:
    from sapiens2.data.synth.writer import write_dataset

    from sapiens2.errors import UsageError  # reported by `sapiens2` like every sub-command's (status 2)

    if args.height < 8 or args.width < 8:
        raise UsageError(f"image size must be at least 8x8, got {args.height}x{args.width}")
    num = args.num if args.num is not None else (0 if args.preview else 1000)
    workers = args.workers if args.workers is not None else default_workers(num)
    if num < 0 or workers < 1 or args.max_people < 1:
        raise UsageError("--num must be >= 0, --workers and --max-people >= 1")
    out = Path(args.output)
    if args.preview:
        import cv2

        from sapiens2.data.synth.preview import contact_sheet
        from sapiens2.data.synth.render import generate_sample

        out.mkdir(parents=True, exist_ok=True)
        samples = [generate_sample(args.seed, i, args.height, args.width, args.max_people)
                   for i in range(PREVIEW_SAMPLES)]
        path = out / "preview.png"
        if not cv2.imwrite(str(path), contact_sheet(samples)[..., ::-1]):
            logger.error("could not write %s", path)
            return 1
        print(f"preview: {path}")
    if num > 0:
        write_dataset(out, num, seed=args.seed, height=args.height, width=args.width, max_people=args.max_people,
                      workers=workers, progress=progress_enabled(args.progress))
        print(f"wrote {num} samples to {out}")
    return 0
