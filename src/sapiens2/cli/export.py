"""``sapiens2 export``: a backbone or task model to ONNX (float32 / float16 / int8), torch.export .pt2, an
AOTInductor .pt2 package or TensorRT."""
from __future__ import annotations

import argparse
from pathlib import Path

from sapiens2.cli.common import add_input_size, parse_hw
from sapiens2.errors import UsageError

EPILOG = """\
examples:
  sapiens2 export --task pose --model 0.4b --format onnx -o pose_0.4b.onnx
  sapiens2 export --task seg --checkpoint seg.safetensors --format onnx --dtype int8 -o seg_int8.onnx
  sapiens2 export --task seg --checkpoint seg.safetensors --dtype int8 --calibrate photos/ -o seg_int8_static.onnx
  sapiens2 export --task backbone --model sapiens2-pretrain-1b-4k --format torch-export -o backbone_4k.pt2
  sapiens2 export --task seg --model 0.4b --format aoti -o seg_0.4b_aoti.pt2
  sapiens2 export --task normal --model 1b --format tensorrt --dtype float16 --batch 8 -o normal.engine
  sapiens2 predict --backend onnxruntime --checkpoint pose=pose_0.4b.onnx photos/ -o out/
  sapiens2 predict --backend aoti --checkpoint seg=seg_0.4b_aoti.pt2 photos/ -o out/

The file takes the normalised float32 NCHW RGB image ((pixels - mean) / std, mean/std in its metadata) and returns
float32 outputs; its metadata (task, arch, input size, mean/std, keypoint or class names, output layout, dtype,
opset) is inside the file (ONNX metadata_props "sapiens2"; .pt2 extra file sapiens2.json; AOTInductor packages:
their metadata map, key "sapiens2"; engines: a header before the TensorRT plan, with the GPU and TensorRT version the
engine is tied to). --format aoti compiles the model ahead of time with AOTInductor for this machine's CPU (needs a
C++ compiler; minutes for large models): the package runs where its code can (same OS and machine, the CPU features
it was compiled with), without Python tracing or a compiler; sapiens2 predict --backend aoti loads it. TensorRT: the
ONNX graph is float32 and --dtype float16/bfloat16 sets the builder's precision flags; build on the GPU that will run
the engine.
Quantise an existing float32 export without exporting again: sapiens2.export.exporter.quantize_exported."""


def add_parser(p: argparse.ArgumentParser) -> None:
    from sapiens2.export.exporter import DEFAULT_OPSET, DTYPES
    from sapiens2.export.metadata import FORMATS
    from sapiens2.models.heads.task_table import task_names

    p.usage = ("%(prog)s --task TASK (--model NAME | --checkpoint PATH) [--format onnx|torch-export|aoti|tensorrt] "
               "[--dtype DTYPE] [--input-size HxW] [--batch dynamic|N] [--calibrate DIR] -o FILE")
    p.epilog = EPILOG
    p.add_argument("-t", "--task", required=True, metavar="TASK",
                   help=f"backbone (alias features) or a task: {', '.join(task_names())}")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", metavar="SIZE|NAME",
                     help="published model size or name (0.4b, sapiens2-pose-1b, sapiens2-pretrain-1b-4k, ...)")
    src.add_argument("--checkpoint", metavar="PATH", help="local checkpoint file or save_pretrained folder")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default onnx)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="float32 (default); float16; bfloat16 (torch-export, aoti, tensorrt); int8 (onnx: ONNX Runtime "
                        "dynamic quantisation, static with --calibrate)")
    add_input_size(p, help="graph input HxW, multiples of 16 (64 with the 4K tokenizer); default: the size the "
                           "model was trained at")
    p.add_argument("--batch", default="dynamic", metavar="dynamic|N", help="batch dimension (default dynamic)")
    p.add_argument("--calibrate", default=None, metavar="DIR",
                   help="int8 static quantisation calibrated on the images in DIR (the task's own preprocessing)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--rope-dtype", default="bf16", choices=("bf16", "fp32"),
                   help="RoPE precision (default bf16, the official numerics)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write (.onnx, .pt2, .engine)")


def run(args: argparse.Namespace) -> int:
    from sapiens2.errors import InputSizeError, Sapiens2Error
    from sapiens2.export.exporter import check_combination, export_checkpoint
    from sapiens2.export.metadata import BACKBONE, SUFFIXES
    from sapiens2.models.heads.task_table import resolve_task

    text = args.task.strip().lower()
    task = BACKBONE if text in (BACKBONE, "features", "pretrain") else resolve_task(text)
    check_combination(args.format, args.dtype)
    if args.calibrate is not None and args.dtype != "int8":
        raise UsageError("--calibrate is for --dtype int8 (static quantisation)")
    if args.calibrate is not None and args.format != "onnx":
        raise UsageError("--calibrate (int8) is for --format onnx")
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"-o {args.output!r} is a folder; give the file to write, e.g. {task}{SUFFIXES[args.format]}")
    if output.suffix.lower() != SUFFIXES[args.format]:
        raise UsageError(f"-o {args.output!r}: a {args.format} file ends in {SUFFIXES[args.format]}")
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise UsageError(f"--checkpoint {args.checkpoint!r} does not exist")
    if args.opset < 17:
        raise UsageError(f"--opset {args.opset}: the exporter needs opset 17 or newer (LayerNormalization)")
    if args.input_size is not None:
        parse_hw("x".join(map(str, args.input_size)))
    try:
        result = export_checkpoint(task, args.checkpoint or args.model, output, format=args.format, dtype=args.dtype,
                                   input_size=args.input_size, batch=args.batch, calibrate=args.calibrate,
                                   opset=args.opset, rope_dtype=args.rope_dtype)
    except InputSizeError as exc:
        raise UsageError(str(exc)) from exc
    except Sapiens2Error:
        raise
    m = result.metadata
    print(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB): {m.task} {m.arch}{' 4K' if m.use_tokenizer else ''}, "
          f"{m.format} {m.dtype}{' (' + m.quantization + ')' if m.quantization else ''}, input "
          f"{m.input_size[0]}x{m.input_size[1]}, batch {m.batch}, outputs {', '.join(m.output_names)} "
          f"in {result.seconds:.1f} s")
    return 0
