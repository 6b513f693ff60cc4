"""The FastAPI application: routes, errors as JSON, API key, access log, batching, graceful shutdown.

``create_app(predictor, config)`` builds it around an already loaded predictor (anything with ``predict_many``,
``tasks`` and ``input_sizes``; :class:`~sapiens2.inference.predictor.Predictor` in practice, a fake in tests), so one
process holds one copy of the models. ``sapiens2 serve`` (:mod:`sapiens2.cli.serve`) loads the models and runs
it under uvicorn.
"""

import asyncio
import dataclasses
import hmac
import json
import logging
import shutil
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from sapiens2.serving.outputs import OutputOptions

from .batching import Batcher, PredictionFailed, ServerBusy
from .results import BASE_NAME, ResultNotFound, ResultStore, media_type, prediction_answer
from .uploads import (UploadError, check_video_work, decode_upload, parse_boxes, parse_task_list, parse_upload,
                      read_body)

logger = logging.getLogger("sapiens2.serve")
access_log = logging.getLogger("sapiens2.serve.access")

LOOPBACK = ("127.0.0.1", "::1", "localhost")
_UPLOAD_BODY = {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "tasks": {"type": "string"}, "boxes": {"type": "string"}},
        "required": ["file"]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}, "required": True}


@dataclass
class ServeConfig:
    """The service's limits and facts. ``results_dir`` None: a temporary folder removed at shutdown."""

    max_batch: int = 8
    batch_wait_ms: float = 5.0
    inference_threads: int = 1  # batches run at once (batching.py); the CLI picks 2 on a CPU with 2+ cores
    max_queue: int = 64
    max_upload_mb: float = 50.0
    max_pixels: int = 50_000_000
    max_video_frames: int = 300
    max_video_pixels: int = 300 * 3840 * 2160  # frames x pixels per clip: 300 frames of 4K UHD; 0 = no limit
    api_key: str | None = None
    results_dir: Path | None = None
    keep_results: int = 200
    output_options: OutputOptions = field(default_factory=OutputOptions)
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for /v1/models (device, dtype, models)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def require_fastapi():
    """Import FastAPI, or fail with the one command that installs the service's dependencies."""
    from sapiens2.errors import Sapiens2Error

    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (form uploads)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise Sapiens2Error(f"the HTTP service needs FastAPI, uvicorn and python-multipart ({exc.name} is missing): "
                            "pip install 'sapiens2[serve]'") from None
    return fastapi


def check_concurrency(predictor, inference_threads: int) -> None:
    """Refuse concurrent batches on a predictor that cannot take them: a compiled model (CUDA graphs replay into
    shared buffers) or a TensorRT engine (one execution context)."""
    from sapiens2.errors import UsageError

    if inference_threads > 1 and (getattr(predictor, "compile_settings", None) is not None
                                  or getattr(predictor, "backend", "torch") == "tensorrt"):
        raise UsageError(f"{inference_threads} inference threads need an eager torch or onnxruntime predictor: "
                         "compiled models and TensorRT engines run one batch at a time (use 1)")


def static_dir() -> Path:
    return Path(str(resources.files("sapiens2.serving.http") / "static"))


def _error(status: int, reason: str, **extra) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": reason, "status": status, **extra}, status_code=status,
                        headers={"Retry-After": str(extra["retry_after_s"])} if "retry_after_s" in extra else None)


def models_info(predictor, config: ServeConfig) -> dict[str, Any]:
    """What ``GET /v1/models`` answers: tasks, model per task (name, arch, input size), device, precision."""
    from sapiens2.runtime import available_devices

    sizes = getattr(predictor, "input_sizes", {}) or {}
    models = {}
    for task, module in (getattr(predictor, "models", {}) or {}).items():
        arch = getattr(getattr(getattr(module, "backbone", None), "arch", None), "name", None)
        hw = sizes.get(task)
        models[task] = {"name": config.output_options.model_names.get(task), "arch": arch,
                        "input_size": {"height": hw[0], "width": hw[1]} if hw else None}
    info = {"tasks": list(predictor.tasks), "models": models,
            "device": str(getattr(predictor, "device", "unknown")), "devices": available_devices(),
            "max_batch": config.max_batch, "inference_threads": config.inference_threads,
            "max_upload_mb": config.max_upload_mb, "max_pixels": config.max_pixels,
            "max_video_frames": config.max_video_frames, "max_video_pixels": config.max_video_pixels,
            **config.info}
    if "pose" in predictor.tasks:  # what the page draws the skeleton with (the pose files hold names and links)
        from sapiens2.data.specs import keypoint_info

        kp = keypoint_info()
        info["keypoints"] = {"names": list(kp.names), "colors": kp.colors.tolist(),
                             "skeleton": [list(map(int, link)) for link in kp.skeleton],
                             "skeleton_colors": kp.skeleton_colors.tolist()}
    if "seg" in predictor.tasks:
        from sapiens2.data.specs import seg_classes

        classes = seg_classes()
        info["seg_classes"] = [{"id": i, "name": n, "color": [int(v) for v in classes.palette[i]]}
                               for i, n in enumerate(classes.names)]
    return info


def create_app(predictor, config: ServeConfig | None = None):
    """The application serving ``predictor`` (already loaded) with ``config``'s limits."""
    require_fastapi()
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import FileResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    config = config or ServeConfig()
    served = list(predictor.tasks)
    options = config.output_options
    described = getattr(predictor, "pose_settings", None)
    if "pose" in served and isinstance(described, dict) and not options.pose_settings:
        options = dataclasses.replace(options, pose_settings=dict(described))  # as PredictJob records them
    check_concurrency(predictor, config.inference_threads)
    own_results = config.results_dir is None
    results_root = Path(tempfile.mkdtemp(prefix="sapiens2-serve-")) if own_results else Path(config.results_dir)
    store = ResultStore(results_root, keep=config.keep_results)
    batcher = Batcher(predictor, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                      max_queue=config.max_queue, wait_for_announced=True,
                      inference_threads=config.inference_threads)
    info = models_info(predictor, config)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app):
        logger.info("serving %s; results in %s", ", ".join(served), results_root)
        yield
        # uvicorn has stopped accepting and let in-flight requests finish; finish queued work, then stop
        await run_in_threadpool(batcher.close)
        if own_results:
            shutil.rmtree(results_root, ignore_errors=True)
        logger.info("stopped")

    docs_assets = offline_docs_assets()
    app = FastAPI(title="Sapiens2", version=_version(), lifespan=lifespan,
                  docs_url=None if docs_assets else "/docs", redoc_url=None if docs_assets else "/redoc",
                  description="Sapiens2 human-centric vision models over HTTP: pose (308 keypoints), body-part "
                              "segmentation, normals, pointmap/depth, albedo, matting. Interactive page at `/`.")
    if docs_assets:
        _serve_docs_offline(app, docs_assets)
    app.state.batcher, app.state.store, app.state.config = batcher, store, config

    @app.middleware("http")
    async def access_and_key(request: Request, call_next):
        # one JSON line per request; the API key (when set) guards /v1 for clients not on loopback
        request_id = uuid.uuid4().hex[:12]
        began = time.perf_counter()
        client = request.client.host if request.client else None
        if config.api_key and request.url.path.startswith("/v1") and client not in LOOPBACK:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
                "Bearer ").strip()
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                response = _error(401, "missing or wrong API key: send it as 'Authorization: Bearer KEY' or "
                                       "'X-API-Key: KEY'")
                _log_access(request, response.status_code, began, request_id, client)
                return response
        response = await call_next(request)
        response.headers["X-Request-Id"] = request_id
        _log_access(request, response.status_code, began, request_id, client)
        return response

    async def read_upload(request: Request):
        body = await read_body(request.stream(), config.max_upload_bytes, request.headers.get("content-length"))
        return await parse_upload(body, request.headers)

    def failure(exc: BaseException):
        if isinstance(exc, UploadError):
            return _error(exc.status, exc.reason)
        if isinstance(exc, ServerBusy):
            return _error(503, f"server busy: {exc}; retry later", retry_after_s=exc.retry_after)
        error_id = uuid.uuid4().hex[:12]
        cause = exc.cause if isinstance(exc, PredictionFailed) else exc
        logger.error("request failed (error id %s)", error_id, exc_info=(type(cause), cause, cause.__traceback__))
        return _error(500, "the model failed on this request; the server is still serving. Quote the error id "
                           "when reporting it", error_id=error_id)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/health", summary="liveness and load")
    async def health():
        stats = batcher.stats
        return {"status": "ok", "tasks": served, "uptime_s": round(time.time() - started, 1),
                "queue": batcher.waiting, "max_queue": config.max_queue, "batches": stats.batches,
                "batched_requests": stats.items, "largest_batch": stats.largest,
                "inference_threads": batcher.inference_threads, "running_batches": stats.running,
                "most_running_batches": stats.most_running}

    @app.get("/v1/models", summary="tasks, models, archs, devices, precision, input sizes")
    async def models():
        return info

    @app.post("/v1/predict", summary="predict on one image (multipart 'file' field or the raw body)",
              openapi_extra={"requestBody": _UPLOAD_BODY})
    async def predict(request: Request,
                      tasks: str | None = Query(None, description=f"comma-separated subset of {','.join(served)}"),
                      boxes: str | None = Query(None, description="person boxes for pose, JSON "
                                                                   "[[x1, y1, x2, y2(, score)], ...]"),
                      encoding: Literal["url", "base64"] = Query("url", description="files as URLs or base64")):
        announced = batcher.announce()  # the batcher waits for announced requests only (batching.py)
        try:
            upload = await read_upload(request)
            wanted = parse_task_list(tasks or upload.fields.get("tasks"), served)
            person_boxes = parse_boxes(boxes or upload.fields.get("boxes"))
            image = await run_in_threadpool(decode_upload, upload, max_pixels=config.max_pixels)
            from sapiens2.serving.bookkeeping import predict_input

            future = batcher.submit(predict_input(image.rgb, boxes=person_boxes), announced)
            prediction = await asyncio.wrap_future(future)
            body = await run_in_threadpool(_answer_bytes, prediction, image.rgb, wanted, options, store, encoding)
        except Exception as exc:
            return failure(exc)
        finally:
            announced.close()
        return Response(body, media_type="application/json")

    @app.post("/v1/predict/video", summary="a short clip -> tracked JSON Lines (header line, one line per frame)",
              openapi_extra={"requestBody": _UPLOAD_BODY})
    async def predict_video(request: Request,
                            tasks: str | None = Query(None, description="default: pose (and pointmap) if served"),
                            every: int = Query(1, ge=1, le=1000, description="every N-th frame"),
                            max_frames: int | None = Query(None, ge=1, description="at most this many frames"),
                            smooth: Literal["none", "light", "strong"] = Query("light")):
        try:
            upload = await read_upload(request)
            default = ",".join(t for t in served if t in ("pose", "pointmap")) or None
            wanted = parse_task_list(tasks or upload.fields.get("tasks") or default, served)
            if not any(t in wanted for t in ("pose", "pointmap")):
                raise UploadError(400, "video JSON Lines need pose or pointmap among the tasks")
            if not upload.data:
                raise UploadError(400, "the upload is empty (0 bytes): send a video file")
            frames = min(max_frames or config.max_video_frames, config.max_video_frames)
            rid, folder = store.new()
            summary = await asyncio.wrap_future(batcher.run_exclusive(
                lambda: _run_video(predictor, upload, folder, wanted, options, every, frames, smooth,
                                   config.max_video_pixels)))
            if summary.failed:
                store.discard(rid)
                raise UploadError(422, f"{upload.filename}: {summary.failed[0].reason}")
        except Exception as exc:
            return failure(exc)
        lines = next(p for p in sorted(folder.iterdir()) if p.name.endswith(".jsonl"))
        return Response(lines.read_bytes(), media_type="application/x-ndjson",
                        headers={"X-Result-Id": rid, "Link": f"</v1/results/{rid}/>; rel=\"related\""})

    @app.get("/v1/results/{rid}/", summary="the files of one result")
    async def result_listing(rid: str):
        try:
            names = store.listing(rid)
        except ResultNotFound:
            return _error(404, "no such result")
        return {"id": rid, "files": {n: f"/v1/results/{rid}/{n}" for n in names}}

    @app.get("/v1/results/{rid}/{name}", summary="one output file of a result")
    async def result_file(rid: str, name: str):
        try:
            path = store.path(rid, name)
        except ResultNotFound:
            try:  # a picture drawn on first request (results.py)
                path = await run_in_threadpool(store.render, rid, name)
            except ResultNotFound:
                return _error(404, "no such result file")
            except Exception as exc:
                return failure(exc)
        return FileResponse(path, media_type=media_type(name))

    return app


def offline_docs_assets() -> Path | None:
    """The folder of Swagger UI / ReDoc scripts shipped by the ``fastapi-offline`` package, when it is installed.
    FastAPI's own ``/docs`` and ``/redoc`` pages load those scripts from a CDN (no page without internet); with
    the package they are served from here. ``/openapi.json`` never needs internet."""
    try:
        folder = Path(str(resources.files("fastapi_offline") / "static"))
    except (ModuleNotFoundError, TypeError):
        return None
    needed = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
    return folder if all((folder / name).is_file() for name in needed) else None


def _serve_docs_offline(app, folder: Path) -> None:
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=folder), name="docs-assets")
    favicon = "/docs-assets/favicon.png" if (folder / "favicon.png").is_file() else None
    extra = {"swagger_favicon_url": favicon} if favicon else {}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css", **extra)

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                              redoc_js_url="/docs-assets/redoc.standalone.js",
                              **({"redoc_favicon_url": favicon} if favicon else {}))


def _answer_bytes(prediction, rgb, tasks, options, store, encoding: str) -> bytes:
    """The encoded answer, made on a worker thread: the pose views are thousands of numbers, and FastAPI's
    generic encoder would walk them one by one on the event loop."""
    answer = prediction_answer(prediction, rgb, tasks, options, store, encoding=encoding)
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _run_video(predictor, upload, folder: Path, tasks, options, every: int, max_frames: int, smooth: str,
               max_video_pixels: int = 0):
    """The ``sapiens2 predict`` video job on one uploaded clip (run alone by the batcher: no batch beside it);
    a clip over ``max_video_pixels`` (frames x pixels) is refused (413) before a frame is decoded."""
    from sapiens2.io import VIDEO_EXTENSIONS, InputItem
    from sapiens2.serving.runner import PredictJob, VideoOptions

    suffix = Path(upload.filename).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        suffix = ".mp4"  # raw bodies have no name; OpenCV finds the container from the content
    clip = folder / f"{BASE_NAME}{suffix}"
    clip.write_bytes(upload.data)
    try:
        check_video_work(clip, upload.filename, every, max_frames, max_video_pixels)
        job = PredictJob(predictor, tasks, folder, options, every=every, read_workers=1, write_workers=1,
                         video=VideoOptions(max_frames=max_frames, smoothing=smooth, frame_files=False, prefetch=4))
        return job.run([InputItem(clip, "video", Path(clip.name))])
    finally:
        clip.unlink(missing_ok=True)  # the upload is not a result


def _log_access(request, status: int, began: float, request_id: str, client: str | None) -> None:
    access_log.info(json.dumps({"event": "http", "id": request_id, "client": client, "method": request.method,
                                "path": request.url.path, "status": status,
                                "ms": round(1000 * (time.perf_counter() - began), 1),
                                "bytes_in": int(request.headers.get("content-length") or 0)}))


def _version() -> str:
    """The installed package's version (read from its metadata: only the CLI imports the package root)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sapiens2")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


__all__ = ["ServeConfig", "check_concurrency", "create_app", "models_info", "offline_docs_assets", "require_fastapi",
           "static_dir"]
