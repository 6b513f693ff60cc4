"""``sapiens2 curate``: turn an image collection into curated, de-duplicated, balanced shards (Ray Data)."""
from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, .txt lists of paths, .tar shards, or URIs (s3://, gs://, file://)")
    p.add_argument("-o", "--output", required=True, help="output folder (shards/, manifest.parquet, report/)")
    p.add_argument("--config", default=None, help="curate.yaml (only the keys that differ from the defaults)")
    p.add_argument("--address", default="", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--clip-model", default=None,
                   help="CLIP hub name or local folder (overrides the config); none = no CLIP stage")
    p.add_argument("--detector", choices=("hog", "onnx", "annotations"), default=None,
                   help="person detector (overrides the config)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    p.add_argument("--progress", action="store_true", help="show Ray Data progress bars")
    p.epilog = ("example:\n  sapiens2 curate photos/ more.tar -o curated/ --config curate.yaml\n"
                "Resume: run the same command again; finished images and shards are skipped.\n"
                "Needs: pip install sapiens2[curate]")
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from sapiens2.errors import ModelNotAvailableError, Sapiens2Error

    try:
        from sapiens2.curation.config import load_config
        from sapiens2.curation.pipeline import curate

        cfg = load_config(args.config)
        if args.num_cpus is not None:
            cfg.ray.num_cpus = args.num_cpus
        if args.clip_model:
            cfg.clip.model = args.clip_model
        if args.detector:
            cfg.person.detector = args.detector
        if args.no_report:
            cfg.output.report = False
        result = curate(args.inputs, args.output, cfg, address=args.address, progress=args.progress)
    except ModelNotAvailableError as exc:  # checked before Ray starts: one line, exit 1 (not a usage error)
        logger.error("%s", exc)
        return 1
    except (Sapiens2Error, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    print(f"{result.kept} of {result.total} images kept -> {result.output / 'shards'}")
    for reason, count in result.by_reason.items():
        print(f"  dropped {reason}: {count}")
    print(f"manifest: {result.manifest}")
    if result.summary:
        print(f"report: {result.output / 'report' / 'index.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sapiens2.cli.curate`` (the same as ``sapiens2 curate``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="sapiens2 curate", description=__doc__)
    add_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
