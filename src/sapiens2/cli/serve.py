"""``sapiens2 serve``: load the models once and answer HTTP requests (an API and a web page)."""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from sapiens2.cli.common import error
from sapiens2.cli.predict import _model_name, add_model_options, build_predictor, parse_input_size, parse_tasks, \
    resolve_models
from sapiens2.errors import Sapiens2Error, UsageError

logger = logging.getLogger(__name__)
API_KEY_ENV = "SAPIENS2_API_KEY"

EPILOG = f"""\
examples:
  sapiens2 serve --task pose,seg,normal --model 0.4b                 (then open http://127.0.0.1:8000/)
  sapiens2 serve --checkpoint ./my_pose.safetensors --device cuda --dtype bfloat16 --port 9000
  SAPIENS2_API_KEY=secret sapiens2 serve --task pose --host 0.0.0.0

  curl -F file=@photo.jpg 'http://127.0.0.1:8000/v1/predict?tasks=pose'
  curl --data-binary @clip.mp4 'http://127.0.0.1:8000/v1/predict/video?max_frames=100'

endpoints: POST /v1/predict, POST /v1/predict/video, GET /v1/results/ID/FILE, GET /v1/models, GET /health,
API docs at /docs, the web page at /.

Binds to 127.0.0.1 (this machine only) by default; --host 0.0.0.0 serves the network, and then an API key
(--api-key or ${API_KEY_ENV}) is required from clients not on loopback. One process holds one copy of the models:
for several GPUs run one process per GPU (--device cuda:N, its own --port) behind a load balancer; --workers is
deliberately not offered, as each worker would load its own copy on the same device."""


def add_parser(p: argparse.ArgumentParser) -> None:
    p.usage = "%(prog)s [--task TASKS] [--model SIZE|NAME] [--checkpoint [TASK=]PATH] [options]"
    p.epilog = EPILOG
    add_model_options(p)
    net = p.add_argument_group("service")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    net.add_argument("--max-batch", default="auto", type=count_or_auto, metavar="N|auto",
                     help="most concurrent requests gathered into one forward pass (1 = no batching; default auto: "
                          "8 on a GPU or MPS, 1 on a CPU, where a batch costs as much per image as single images or "
                          "more and two inference threads side by side do better; benchmarks/serve.py)")
    net.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="MS",
                     help="how long to wait for more requests to batch with the first (default 5)")
    net.add_argument("--inference-threads", default="auto", type=count_or_auto, metavar="N|auto",
                     help="batches run at once on the one copy of the models (default auto: 2 on a CPU with 2 or "
                          "more cores, else 1). On a CPU a forward with one torch thread uses about one core, so two "
                          "batches at once use two and the throughput under load rises (benchmarks/serve.py); "
                          "torch's intra-op threads are divided among them (1 keeps them all for one batch: lower "
                          "latency for a lone client). More than 2 makes batches smaller and needs memory for each "
                          "batch in flight; on a GPU one batch at a time keeps it busy")
    net.add_argument("--max-queue", type=int, default=64, metavar="N",
                     help="waiting requests beyond which the server answers 503 + Retry-After (default 64)")
    net.add_argument("--max-upload-mb", type=float, default=50.0, metavar="MB", help="upload limit (default 50)")
    net.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N",
                     help="refuse images with more than N pixels (413), read from the header before decoding; the "
                          "same option as predict's (default 50000000; 0 = no limit)")
    net.add_argument("--max-video-frames", type=int, default=300, metavar="N",
                     help="most frames processed per uploaded clip (default 300)")
    net.add_argument("--max-video-pixels", type=int, default=300 * 3840 * 2160, metavar="N",
                     help="refuse a clip (413) whose frames to process hold more than N pixels in all, frames x "
                          "width x height as the container reports them, before a frame is decoded (default "
                          "2488320000: 300 frames of 3840x2160; 0 = no limit)")
    net.add_argument("--results-dir", default=None, metavar="DIR",
                     help="where result files are kept (default: a temporary folder removed at exit)")
    net.add_argument("--keep-results", type=int, default=200, metavar="N", help="newest results kept (default 200)")
    net.add_argument("--api-key", default=None, metavar="KEY",
                     help=f"required from clients not on loopback (default: ${API_KEY_ENV} if set)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def count_or_auto(text: str) -> str | int:
    """An option that is "auto" or a whole number >= 1, as argparse checks it."""
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1 or auto, not {text!r}")
    return int(text)


def resolve_max_batch(value: str | int, device) -> int:
    """``--max-batch``: "auto" is 8 on an accelerator (a batch fills it) and 1 on a CPU. Measured there with the
    tiny arch, 1 thread: a batch of 8 costs 94 ms per image at 512x384 against 87 ms alone, and
    ``predict_many`` in batches of 16 gives 0.83x the images/s of single images; the server's throughput at 16
    clients was 1.27x one-at-a-time with batches of up to 16 and 1.36x without (two inference threads)."""
    if value == "auto":
        return 1 if device.type == "cpu" else 8
    return int(value)


def resolve_inference_threads(value: str | int, device) -> int:
    """The threads for ``--inference-threads``: "auto" is 2 on a CPU with 2+ usable cores (two forwards of one
    torch thread each use two cores; measured with benchmarks/serve.py), else 1 (a GPU runs one batch at a time
    anyway)."""
    from sapiens2.runtime import usable_cores

    if value == "auto":
        return min(2, usable_cores()) if device.type == "cpu" else 1
    return int(value)


def share_cpu_threads(inference_threads: int) -> None:
    """Divide torch's intra-op threads among the concurrent batches (at least one each), so that they do not
    oversubscribe the cores: with one thread an op runs in the calling thread, and the batches run side by side."""
    import torch

    before = torch.get_num_threads()
    each = max(1, before // inference_threads)
    if each != before:
        torch.set_num_threads(each)
    logger.info("%d inference threads, %d torch thread(s) each", inference_threads, each)


def build_service(args: argparse.Namespace):
    """(app, config) for parsed options: checks them, loads the models (may download), builds the app."""
    from sapiens2.serving.http.app import ServeConfig, create_app, require_fastapi
    from sapiens2.serving.outputs import OutputOptions

    require_fastapi()  # before loading models: a missing extra should fail in a second, not after a download
    for name in ("max_queue", "max_video_frames", "keep_results"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_upload_mb <= 0 or args.max_pixels < 0 or args.max_video_pixels < 0:
        raise UsageError("--max-upload-mb must be > 0, --max-pixels and --max-video-pixels >= 0 (0 = no limit)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    tasks, models = resolve_models(args, parse_tasks(args.task))
    input_size = parse_input_size(args.input_size)
    from sapiens2.runtime import resolve_device

    device = resolve_device(args.device)  # an unavailable --device: a usage error before any model is loaded
    inference_threads = resolve_inference_threads(args.inference_threads, device)
    args.max_batch = resolve_max_batch(args.max_batch, device)
    args.batch_size = args.max_batch  # a gathered batch is one forward (Predictor batches pose crops alike)
    predictor = build_predictor(args, tasks, models, input_size)
    if device.type == "cpu" and inference_threads > 1:
        share_cpu_threads(inference_threads)
    config = ServeConfig(
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, inference_threads=inference_threads,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
        max_video_frames=args.max_video_frames, max_video_pixels=args.max_video_pixels,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        results_dir=args.results_dir, keep_results=args.keep_results,
        output_options=OutputOptions(seg_probabilities=args.seg_probs,
                                     model_names={t: _model_name(m, t) for t, m in models.items()}),
        info={"precision": args.dtype})
    return create_app(predictor, config), config


def run(args: argparse.Namespace) -> int:
    try:
        app, config = build_service(args)
    except UsageError:
        raise
    except Sapiens2Error as exc:  # missing extra, model not available offline, bad checkpoint, ...
        error("serve", str(exc))
        return 1
    import uvicorn

    where = f"http://{args.host}:{args.port}/"
    if _is_loopback(args.host):
        logger.info("listening on %s (this machine only; --host 0.0.0.0 serves the network)", where)
    elif config.api_key:
        logger.info("listening on %s for the network; /v1 needs the API key from clients not on loopback", where)
    else:
        logger.warning("listening on %s for the network WITHOUT an API key: anyone who can reach it can use the "
                       "models; set --api-key or %s", where, API_KEY_ENV)
    # uvicorn's own access log is off: ours (logger sapiens2.serve.access) writes one JSON line per request.
    # On SIGINT/SIGTERM uvicorn stops accepting, lets in-flight requests finish, then the app stops its worker.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info",
                timeout_graceful_shutdown=60)
    return 0
