"""``sapiens2 benchmark``: time the task models per backend, precision and batch size; print and save the table."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.predict import parse_input_size, parse_tasks, resolve_models
from sapiens2.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_RANDOM_INPUT = (1024, 768)

EPILOG = """\
examples:
  sapiens2 benchmark --task pose --random-weights sapiens2_tiny --input-size 256x192 -o bench/
  sapiens2 benchmark --task pose --random-weights 0.1b --input-size 512x384 --backend torch,torch-compile \\
      --dtype float32,bfloat16,int8 --batch-size 1,8 -o bench/
  sapiens2 benchmark --task pose,seg --model 0.4b --device cuda --dtype bfloat16 --batch-size 1,8,32 \\
      --backend torch,torch-compile --compile-mode reduce-overhead -o bench/

Prints a table and writes <OUT>/benchmark.json and <OUT>/benchmark.md: items (images, or person crops for pose)
per second, ms per item, counted GFLOP per item (torch.utils.flop_counter: FLOPs, not MACs), achieved FLOP/s and
its share of the device's matmul ceiling (a large matmul timed in the same precision in the same run), peak memory
during the timed calls, and the error against PyTorch float32. Times are the best of --iters calls of the model on
a random input already on the device. Backends: torch (eager; bfloat16/float16 by autocast; int8 = torch's dynamic
quantisation of the Linear layers, CPU only), torch-compile and onnxruntime (the graph `sapiens2 export` writes;
int8 = ONNX Runtime's dynamic quantisation, static with --calibrate DIR), aoti (the AOTInductor package `sapiens2
export --format aoti` writes, compiled once for this machine; needs a C++ compiler) and tensorrt (CUDA: an engine
built from that graph, float16/bfloat16 by builder flags). Exports are cached by the weights (--export-cache): one
export serves every batch size and later runs, and int8 is quantised from it."""


def _csv(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes are comma-separated integers, e.g. 1,8,32; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return sizes


def _precisions(text: str) -> tuple[str, ...]:
    from sapiens2.profiling.backends import PRECISIONS

    names = tuple(_csv(text))
    bad = [n for n in names if n not in PRECISIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--dtype takes a comma list of {', '.join(PRECISIONS)}; got {text!r}")
    return names


def add_parser(p: argparse.ArgumentParser) -> None:
    from sapiens2.profiling.backends import backend_names

    p.usage = ("%(prog)s [--task TASKS] [--model SIZE|NAME | --checkpoint [TASK=]PATH | --random-weights ARCH] "
               "[--backend B,..] [--dtype D,..] [--batch-size N,..] [options] [-o OUT]")
    p.epilog = EPILOG
    from sapiens2.models.heads.task_table import task_names

    # the models to time: predict's spelling of --task / --model / --checkpoint / --device / --input-size, without
    # its pipeline options (detector, flip test, seg probabilities: the benchmark times the model alone)
    models = p.add_argument_group("models")
    models.add_argument("-t", "--task", action="append", default=[], metavar="TASKS",
                        help=f"comma-separated tasks: {', '.join(task_names())} (repeatable; default: the tasks of the "
                             "--checkpoint files)")
    models.add_argument("-m", "--model", default=None, metavar="SIZE|NAME",
                        help="published model size or name, e.g. 0.4b, sapiens2-pose-1b (default 0.4b)")
    models.add_argument("--checkpoint", action="append", default=[], metavar="[TASK=]PATH",
                        help="local checkpoint file for a task (repeatable)")
    models.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps",
                        help="where to run (default auto: cuda, then mps, then cpu)")
    models.add_argument("--input-size", default=None, metavar="HxW",
                        help="model input size (pose: the crop), e.g. 256x192 (default 1024x768)")
    p.set_defaults(detector=None)  # resolve_models reads it: no seg model for boxes is ever needed here
    bench = p.add_argument_group("benchmark")
    bench.add_argument("--dtype", type=_precisions, default=("float32",), metavar="D[,D..]",
                       help="precisions to measure, comma-separated: float32, bfloat16, float16, int8 (default "
                            "float32)")
    bench.add_argument("--random-weights", default=None, metavar="ARCH",
                       help="no checkpoint: random weights of an arch (sapiens2_tiny, 0.1b, 0.4b, ...); runs offline")
    bench.add_argument("--backend", type=_csv, default=["torch"], metavar="B[,B..]",
                       help=f"backends, comma-separated: {', '.join(backend_names())} (default torch)")
    bench.add_argument("--batch-size", type=_batch_sizes, default=(1,), metavar="N[,N..]",
                       help="batch sizes, comma-separated (default 1)")
    bench.add_argument("--iters", type=int, default=10, metavar="N", help="timed calls per configuration (default 10)")
    bench.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed calls first (default 2)")
    bench.add_argument("--compile-mode", default="default", metavar="MODE",
                       help="torch-compile backend: default, reduce-overhead, max-autotune, "
                            "max-autotune-no-cudagraphs (default: default)")
    bench.add_argument("--calibrate", default=None, metavar="DIR",
                       help="onnxruntime int8: static quantisation calibrated on the images in DIR (default dynamic)")
    bench.add_argument("--export-cache", default=None, metavar="DIR",
                       help="onnxruntime/aoti/tensorrt: where exports are kept, keyed by the weights (default: "
                            "$SAPIENS2_EXPORT_CACHE or ~/.cache/sapiens2/exports); one export serves every batch size")
    bench.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                       help="skip timing the matmul ceiling (no %% of ceiling column)")
    bench.add_argument("-o", "--output", default=None, metavar="OUT",
                       help="folder for benchmark.json and benchmark.md (default: print only)")


def _loader(args, tasks: list[str], input_size, device):
    """task -> float32 eval model on the device: random weights of an arch, or what resolve_models names."""
    import torch

    if args.random_weights:
        from sapiens2.models.arch import get_arch
        from sapiens2.models.task_model import build_model

        try:
            arch = get_arch(args.random_weights)
        except Exception as exc:
            raise UsageError(f"--random-weights {args.random_weights!r}: {exc}") from None

        def load(task):
            torch.manual_seed(0)
            return build_model(task, arch, img_size=input_size).to(device).eval()

        return load
    _, models = resolve_models(args, tasks)
    from sapiens2.checkpoints import load_model

    def load(task):
        return load_model(models[task], task=task, device=device, img_size=input_size).eval()

    return load


def run(args: argparse.Namespace) -> int:
    from sapiens2.inference.compile import COMPILE_MODES
    from sapiens2.profiling.backends import BackendOptions, find_backend
    from sapiens2.profiling.benchmark import BenchmarkConfig, run_benchmark, write_report
    from sapiens2.runtime import resolve_device

    tasks = parse_tasks(args.task)
    if args.random_weights and args.checkpoint:
        raise UsageError("--random-weights and --checkpoint exclude each other: give one")
    if not tasks and args.random_weights:
        raise UsageError("--random-weights needs --task (e.g. --task pose)")
    if args.compile_mode not in COMPILE_MODES:
        raise UsageError(f"--compile-mode {args.compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if args.iters < 1 or args.warmup < 0:
        raise UsageError(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    for name in args.backend:
        find_backend(name)
    if not args.random_weights:
        tasks, _ = resolve_models(args, tasks)  # checks the options before anything is loaded
    input_size = parse_input_size(args.input_size) or DEFAULT_RANDOM_INPUT
    device = resolve_device(args.device)
    output = Path(args.output) if args.output else None
    if output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"-o {args.output!r} is a file; give a folder")
    config = BenchmarkConfig(tasks=tuple(tasks), input_size=tuple(input_size), backends=tuple(args.backend),
                             dtypes=tuple(args.dtype), batch_sizes=tuple(args.batch_size), iters=args.iters,
                             warmup=args.warmup, device=str(device), measure_ceiling=args.ceiling,
                             options=BackendOptions(compile_mode=args.compile_mode, cache_dir=args.export_cache,
                                                     extra={"calibrate": args.calibrate} if args.calibrate else {}))

    def progress(row):
        if row.status == "ok":
            logger.info("%s %s %s batch %d: %.2f ms per %s (%.1f%% of the %s matmul ceiling)", row.task,
                        row.backend, row.dtype, row.batch_size, row.ms_per_item, row.unit,
                        100 * (row.ceiling_share or 0), row.dtype)
        else:
            logger.info("%s %s %s batch %d: %s (%s)", row.task, row.backend, row.dtype, row.batch_size, row.status,
                        row.reason)

    report = run_benchmark(config, _loader(args, tasks, input_size, device), on_row=progress)
    print(report.to_markdown(), end="")
    if output is not None:
        json_path, md_path = write_report(report, output)
        print(f"wrote {json_path} and {md_path}")
    return 0 if any(r.status == "ok" for r in report.rows) else 1
