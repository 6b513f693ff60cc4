"""``sapiens2 serve``: the HTTP API with FastAPI's test client and a real uvicorn on 127.0.0.1, using tiny
random-weight official-format checkpoints written here (sapiens2_tiny, 128x96 model input)."""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'sapiens2[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's test client) is not installed")
uvicorn = pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from conftest import write_tiny_checkpoints  # noqa: E402

from sapiens2.cli.main import build_parser, main  # noqa: E402
from sapiens2.io import decode_image  # noqa: E402
from sapiens2.serving.http import Batcher, ServerBusy  # noqa: E402
from sapiens2.serving.http.app import ServeConfig, create_app  # noqa: E402
from sapiens2.serving.outputs import OutputOptions, write_prediction  # noqa: E402
from sapiens2.tasks.results import Prediction  # noqa: E402

ASTRONAUT = Path(__file__).parents[1] / "examples" / "astronaut.jpg"
TASKS = ("pose", "seg", "normal", "matting")
LIMITS = ["--max-upload-mb", "1", "--max-pixels", "1000000"]  # small limits make the oversize cases cheap


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"), TASKS, (128, 96))


def serve_args(checkpoints, *extra: str):
    ckpt = [a for t in TASKS for a in ("--checkpoint", f"{t}={checkpoints[t]}")]
    return build_parser("serve").parse_args(["serve", *ckpt, "--device", "cpu", "--input-size", "128x96",
                                             "--detector", "none", *LIMITS, *extra])


@pytest.fixture(scope="module")
def service(checkpoints):
    """(app, config, predictor) built by the CLI's own code path; one torch thread (2 shared cores)."""
    from sapiens2.cli.serve import build_service

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    app, config = build_service(serve_args(checkpoints, "--batch-wait-ms", "20"))
    with TestClient(app) as client:
        yield client, app, config
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def client(service):
    return service[0]


@pytest.fixture(scope="module")
def predictor(service):
    return service[1].state.batcher.predictor


def jpeg(h=48, w=40, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    ok, data = cv2.imencode(".jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert ok
    return data.tobytes()


def png(h, w) -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))
    return data.tobytes()


# ------------------------------------------------------------------------------------------------ endpoints
def test_health_models_docs_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["tasks"] == ["seg", "pose", "normal", "matting"]
    models = client.get("/v1/models").json()
    assert set(models["tasks"]) == set(TASKS) and models["device"] == "cpu" and "cpu" in models["devices"]
    assert models["models"]["pose"] == {"name": "tiny_pose.safetensors", "arch": "sapiens2_tiny",
                                        "input_size": {"height": 128, "width": 96}}
    assert models["precision"] == "float32" and len(models["seg_classes"]) == 29
    assert len(models["keypoints"]["names"]) == 308
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/video", "/v1/models", "/health"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_predict_matches_the_files_predict_writes(client, predictor, tmp_path):
    data = ASTRONAUT.read_bytes()
    r = client.post("/v1/predict", files={"file": ("astronaut.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["image_size"] == {"height": 512, "width": 512} and answer["tasks"] == list(predictor.tasks)
    pose = answer["pose"]
    assert pose["format"] == "sapiens2.pose.image" and pose["model"] == "tiny_pose.safetensors"
    assert pose["num_people"] == 1 and all(len(p["keypoints"]) == 308 for p in pose["people"])
    assert len(pose["people"][0]["coco_wholebody133"]) == 133

    # the same Prediction from Predictor directly, written by `sapiens2 predict`'s writers: identical files
    rgb = decode_image(data).rgb
    options = OutputOptions(model_names={t: f"tiny_{t}.safetensors" for t in TASKS},
                            pose_settings=predictor.pose_settings)
    written = write_prediction(predictor.predict(rgb), rgb, tmp_path / "image", list(predictor.tasks), options)
    assert sorted(p.name for p in written) == sorted(f["name"] for f in answer["files"].values())
    for path in written:
        served = client.get(answer["files"][path.name[len("image."):]]["url"])
        assert served.status_code == 200
        if path.suffix == ".json":
            assert json.loads(served.content) == json.loads(path.read_bytes()) == pose
        else:
            assert served.content == path.read_bytes(), path.name
    listing = client.get(f"/v1/results/{answer['id']}/").json()
    assert sorted(listing["files"]) == sorted(p.name for p in written + [tmp_path / "seg_classes.json"])


def test_raw_body_base64_tasks_and_boxes(client):
    box = [4.0, 6.0, 30.0, 44.0]
    r = client.post("/v1/predict", params={"tasks": "pose,normals", "encoding": "base64", "boxes": json.dumps([box])},
                    content=jpeg(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["tasks"] == ["pose", "normal"]
    assert sorted(answer["files"]) == ["normal.npy", "normal.png", "pose.json", "pose.png"]
    assert answer["pose"]["box_source"] == "given" and answer["pose"]["people"][0]["box"] == box
    assert answer["pose"]["people"][0]["detector"] == "given-boxes"  # what produced each box, per person
    normal_png = base64.b64decode(answer["files"]["normal.png"]["base64"])
    assert cv2.imdecode(np.frombuffer(normal_png, np.uint8), cv2.IMREAD_COLOR).shape == (48, 40, 3)
    assert client.get(f"/v1/results/{answer['id']}/image.normal.png").status_code == 404  # base64: not kept
    # form fields work like the query parameters
    r = client.post("/v1/predict", files={"file": ("x.jpg", jpeg(), "image/jpeg")}, data={"tasks": "seg"})
    assert r.status_code == 200 and r.json()["tasks"] == ["seg"]


def _truncated_png() -> bytes:
    return png(40, 30)[:60]


def _bomb_png() -> bytes:
    """A PNG whose header claims 60000 x 60000 pixels: refused from the header, never decoded."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("body, content_type, params, status, words", [
    (b"", "image/jpeg", {}, 400, "empty"),
    (b"hello, I am text", "text/plain", {}, 415, "not an image"),
    (b"\x00\x01 not an image at all", "application/octet-stream", {}, 415, "not an image"),
    ("truncated_jpeg", "image/jpeg", {}, 422, "truncated"),
    ("truncated_png", "image/png", {}, 422, "corrupt"),
    ("bomb", "image/png", {}, 413, "megapixels"),
    ("big_pixels", "image/png", {}, 413, "megapixels"),
    ("oversized", "image/jpeg", {}, 413, "--max-upload-mb"),
    ("ok", "image/jpeg", {"tasks": "pose,fly"}, 400, "unknown task"),
    ("ok", "image/jpeg", {"tasks": "pointmap"}, 400, "not served"),
    ("ok", "image/jpeg", {"boxes": "[[1, 2, 3]]"}, 400, "boxes"),
    ("ok", "image/jpeg", {"boxes": "[[10, 10, 5, 20]]"}, 400, "x2 > x1"),
    ("ok", "image/jpeg", {"boxes": "nope"}, 400, "boxes must be JSON"),
])
def test_bad_input_gets_4xx_with_a_reason(client, body, content_type, params, status, words):
    body = {"truncated_jpeg": ASTRONAUT.read_bytes()[:4000], "truncated_png": _truncated_png(),
            "bomb": _bomb_png(), "big_pixels": png(1100, 1000), "oversized": b"\xff" * (2**20 + 10),
            "ok": jpeg()}.get(body, body) if isinstance(body, str) else body
    r = client.post("/v1/predict", params=params, content=body, headers={"content-type": content_type})
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["status"] == status
    assert client.get("/health").json()["status"] == "ok"


def test_bad_multipart_and_bad_encoding(client):
    r = client.post("/v1/predict", data={"tasks": "pose"}, files={"other": ("a.txt", b"x", "text/plain"),
                                                                  "more": ("b.txt", b"y", "text/plain")})
    assert r.status_code == 400 and "no file" in r.json()["error"]
    r = client.post("/v1/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    assert client.post("/v1/predict", params={"encoding": "hex"}, content=jpeg()).status_code == 422


def test_result_ids_cannot_reach_other_paths(client, service, tmp_path):
    store = service[1].state.store
    answer = client.post("/v1/predict", params={"tasks": "seg"}, content=jpeg()).json()
    rid = answer["id"]
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (store.root / rid / "link.png").symlink_to(secret)  # a link inside a result folder pointing out
    for path in [f"/v1/results/{rid}/link.png", f"/v1/results/{rid}/..%2F..%2Fsecret.txt",
                 f"/v1/results/{rid}/%2e%2e", f"/v1/results/..%2F{rid}/image.seg.png",
                 f"/v1/results/{rid}/.hidden", f"/v1/results/{rid.upper()}/image.seg.png",
                 f"/v1/results/{'0' * 32}/image.seg.png", "/v1/results/%2Fetc/passwd",
                 f"/v1/results/{rid}/%2Fetc%2Fpasswd", "/v1/results/..%2F..%2F..%2Fetc/passwd", "/v1/results/x/"]:
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"secret" not in r.content
    assert client.get(f"/v1/results/{rid}/image.seg.png").status_code == 200


def test_pictures_are_drawn_only_when_their_url_is_fetched(client, service):
    store = service[1].state.store
    answer = client.post("/v1/predict", params={"tasks": "pose,seg"}, content=ASTRONAUT.read_bytes()).json()
    rid, folder = answer["id"], store.root / answer["id"]
    pictures = {"pose.png", "seg_vis.png"}
    assert pictures <= set(answer["files"]) and all("bytes" not in answer["files"][k] for k in pictures)
    assert all("bytes" in v for k, v in answer["files"].items() if k not in pictures)
    assert not any((folder / f"image.{k}").exists() for k in pictures)  # nothing drawn yet
    listing = client.get(f"/v1/results/{rid}/").json()["files"]
    assert {"image.pose.png", "image.seg_vis.png"} <= set(listing)  # offered all the same

    served = client.get(answer["files"]["pose.png"]["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    # (the picture equals the one `sapiens2 predict` writes: test_predict_matches_the_files_predict_writes)
    assert (folder / "image.pose.png").is_file() and not (folder / "image.seg_vis.png").exists()
    assert cv2.imdecode(np.frombuffer(served.content, np.uint8), cv2.IMREAD_COLOR).shape == (512, 512, 3)
    assert client.get(answer["files"]["pose.png"]["url"]).content == served.content  # from the folder now
    assert store.pending(rid) == ["image.seg_vis.png"]
    assert client.get(answer["files"]["seg_vis.png"]["url"]).status_code == 200
    assert store.pending(rid) == [] and rid not in store._pending  # all drawn: the prediction is released

    other = client.post("/v1/predict", params={"tasks": "pose"}, content=jpeg()).json()["id"]
    for path in [f"/v1/results/{'0' * 32}/image.pose.png", f"/v1/results/{other}/image.seg_vis.png",
                 f"/v1/results/{other}/image.normal.png", f"/v1/results/{other}/..%2Fimage.pose.png",
                 f"/v1/results/{other.upper()}/image.pose.png"]:
        assert client.get(path).status_code == 404, path  # bad ids and pictures of tasks not asked for
    assert not (store.root / other / "image.seg_vis.png").exists()
    assert client.get(f"/v1/results/{other}/image.pose.png").status_code == 200


def test_docs_use_no_cdn_when_fastapi_offline_ships_the_assets(predictor, tmp_path, monkeypatch):
    # default: FastAPI's pages, whose scripts come from a CDN (README: /docs needs internet, /openapi.json not)
    from sapiens2.serving.http import app as app_module

    assert app_module.offline_docs_assets() is None or (app_module.offline_docs_assets() / "swagger-ui.css").is_file()
    static = tmp_path / "fastapi_offline" / "static"  # the layout of the fastapi-offline wheel
    static.mkdir(parents=True)
    (tmp_path / "fastapi_offline" / "__init__.py").write_text("")
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        (static / name).write_text(f"/* {name} */")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "fastapi_offline", raising=False)
    assert app_module.offline_docs_assets() == static
    with TestClient(create_app(predictor, ServeConfig(max_batch=1))) as local:
        for page in ("/docs", "/redoc"):
            html = local.get(page).text
            assert "/docs-assets/" in html and "cdn" not in html.lower(), page
        assert local.get("/docs-assets/swagger-ui.css").text == "/* swagger-ui.css */"
        assert local.get("/openapi.json").status_code == 200


def test_pending_pictures_are_bounded_in_memory(tmp_path):
    from sapiens2.serving.http.results import ResultStore
    from sapiens2.tasks.results import SegResult

    store = ResultStore(tmp_path, keep=3, lazy_bytes=2500)
    rgb = np.zeros((20, 20, 3), np.uint8)  # 1200 bytes, + 400 for the class ids
    ids = []
    for _ in range(3):
        rid, _ = store.new()
        pred = Prediction(image_size=(20, 20), seg=SegResult(mask=np.zeros((20, 20), np.uint8)))
        assert store.defer(rid, pred, rgb, ["seg"], OutputOptions()) == ["image.seg_vis.png"]
        ids.append(rid)
    assert list(store._pending) == ids[2:] and store._pending_bytes == 1600  # the oldest dropped past 2500 bytes
    with pytest.raises(LookupError):
        store.render(ids[0], "image.seg_vis.png")
    assert store.render(ids[2], "image.seg_vis.png").is_file()
    rid, _ = store.new()  # pruning a folder (keep=3) drops its pending pictures too
    assert store.defer(rid, pred, rgb, ["seg"], OutputOptions()) and store.pending(rid)
    for _ in range(3):
        store.new()
    assert store.pending(rid) == [] and store._pending_bytes == 0


# ------------------------------------------------------------------------------------------------ failures
class Flaky:
    """The real predictor, except that images 13 pixels wide fail inside the model (and ``explode`` fails the
    whole batch call)."""

    def __init__(self, inner):
        self.inner, self.explode, self.calls = inner, False, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_many(self, items, batch_size=None):
        items = list(items)
        self.calls.append(len(items))
        if self.explode:
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        good = [it for it in items if it.image.shape[1] != 13]
        done = iter(self.inner.predict_many(good, batch_size=batch_size))
        for it in items:
            yield next(done) if it.image.shape[1] != 13 else Prediction(image_size=(0, 0), error=RuntimeError("boom"))


def test_a_model_failure_is_a_500_with_an_id_and_the_server_keeps_serving(predictor, caplog):
    flaky = Flaky(predictor)
    with TestClient(create_app(flaky, ServeConfig(batch_wait_ms=1))) as client:
        r = client.post("/v1/predict", content=jpeg(20, 13))
        assert r.status_code == 500, r.text
        error_id = r.json()["error_id"]
        assert len(error_id) == 12 and "still serving" in r.json()["error"]
        assert error_id in caplog.text and "boom" in caplog.text  # the log has the traceback under the id
        assert client.post("/v1/predict", params={"tasks": "pose"}, content=jpeg()).status_code == 200
        flaky.explode = True
        assert client.post("/v1/predict", content=jpeg()).status_code == 500
        flaky.explode = False
        assert client.post("/v1/predict", params={"tasks": "pose"}, content=jpeg()).status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_api_key_is_required_off_loopback(predictor):
    # the test client's address is "testclient", not loopback: it must show the key
    with TestClient(create_app(predictor, ServeConfig(api_key="s3cret"))) as client:
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
        r = client.get("/v1/models")
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert client.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_model_options_are_the_same_parser_as_predict():
    parser = build_parser()
    sub = {a.dest: a for a in parser._subparsers._group_actions[0].choices["serve"]._actions}
    predict = {a.dest: a for a in parser._subparsers._group_actions[0].choices["predict"]._actions}
    for dest in ("task", "model", "checkpoint", "device", "dtype", "flip_test", "detector", "input_size",
                 "seg_probs"):
        assert sub[dest].option_strings == predict[dest].option_strings and sub[dest].help == predict[dest].help
    args = build_parser("serve").parse_args(["serve", "--task", "pose"])
    assert (args.host, args.port, args.max_batch, args.max_upload_mb) == ("127.0.0.1", 8000, "auto", 50.0)


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    assert main(["serve", "--task", "pose", "--device", "cpu"]) == 1
    assert "pip install 'sapiens2[serve]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ batching
class Counting:
    """A stand-in predictor that records each predict_many call and can hold the worker until released."""

    tasks = ("pose",)

    def __init__(self, hold: threading.Event | None = None):
        self.calls: list[int] = []
        self.hold = hold

    def predict_many(self, items, batch_size=None):
        items = list(items)
        self.calls.append(len(items))
        if self.hold is not None:
            assert self.hold.wait(20)
        return [f"p{item}" for item in items]


def test_batcher_gathers_concurrent_requests_and_off_means_one_each():
    for max_batch, expected in ((8, [8]), (1, [1] * 8)):
        fake = Counting()
        batcher = Batcher(fake, max_batch=max_batch, wait_ms=500 if max_batch > 1 else 0)
        futures = [batcher.submit(i) for i in range(8)]
        assert [f.result(10) for f in futures] == [f"p{i}" for i in range(8)]
        batcher.close()
        assert fake.calls == expected


def test_batcher_waits_only_for_announced_requests():
    fake = Counting()
    batcher = Batcher(fake, max_batch=8, wait_ms=60_000, wait_for_announced=True)  # a wait no test could sit out
    assert batcher.submit(0).result(10) == "p0" and fake.calls == [1]  # nothing announced: run at once
    tickets = [batcher.announce() for _ in range(3)]
    futures = [batcher.submit(1, tickets[0])]
    futures.append(batcher.submit(2, tickets[1]))
    tickets[2].close()  # the third failed before submitting (e.g. a bad upload): nothing is waited for any more
    tickets[2].close()  # closing twice counts once
    assert [f.result(10) for f in futures] == ["p1", "p2"]
    batcher.close()
    assert fake.calls == [1, 2] and batcher._announced == 0


def test_batcher_bounded_queue_and_graceful_close():
    release = threading.Event()
    fake = Counting(hold=release)
    batcher = Batcher(fake, max_batch=1, wait_ms=0, max_queue=2)
    first = batcher.submit(0)
    deadline = time.monotonic() + 10
    while not fake.calls and time.monotonic() < deadline:  # the worker holds the first request
        time.sleep(0.01)
    queued = [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(ServerBusy):
        batcher.submit(3)
    release.set()
    batcher.close()  # finishes what was queued
    assert [f.result(1) for f in [first, *queued]] == ["p0", "p1", "p2"]
    with pytest.raises(ServerBusy, match="shutting down"):
        batcher.submit(4)


class Meeting:
    """A stand-in predictor whose calls only return once ``parties`` of them are inside ``predict_many`` at the
    same time (a barrier: run one after another, they would break it instead)."""

    tasks = ("pose",)

    def __init__(self, parties: int):
        self.barrier = threading.Barrier(parties, timeout=20)
        self.hold, self.entered = threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.inside, self.threads = 0, set()

    def predict_many(self, items, batch_size=None):
        items = list(items)
        with self.lock:
            self.inside += 1
            self.threads.add(threading.current_thread().name)
        try:
            if items[0] == "held":
                self.entered.set()
                assert self.hold.wait(20)
            else:
                self.barrier.wait()
            return [f"p{item}" for item in items]
        finally:
            with self.lock:
                self.inside -= 1


def test_batcher_runs_batches_at_once_on_its_inference_threads_and_exclusive_work_alone():
    fake = Meeting(parties=2)
    batcher = Batcher(fake, max_batch=1, wait_ms=0, inference_threads=2)
    futures = [batcher.submit(i) for i in range(4)]  # pairs meet at the barrier: two batches in the model at once
    assert [f.result(30) for f in futures] == ["p0", "p1", "p2", "p3"]
    assert len(fake.threads) == 2 and batcher.stats.most_running == 2 and batcher.stats.batches == 4
    held = batcher.submit("held")  # in the model until released
    assert fake.entered.wait(20)
    seen = []
    exclusive = batcher.run_exclusive(lambda: seen.append(fake.inside) or "done")
    after = batcher.submit(5)  # queued behind the exclusive job: must not start beside it
    deadline = time.monotonic() + 20
    while batcher.waiting > 1:  # until the batcher has taken the exclusive job (and waits for the held batch)
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not exclusive.done() and seen == []
    fake.barrier = threading.Barrier(1)  # from here on, batches pass alone
    fake.hold.set()
    assert held.result(30) == "pheld" and exclusive.result(30) == "done" and after.result(30) == "p5"
    assert seen == [0]  # the exclusive job ran with no batch in the model
    batcher.close()
    assert batcher.stats.running == 0 and batcher.stats.calls == 1
    with pytest.raises(Exception, match=">= 1"):
        Batcher(fake, inference_threads=0)


def test_concurrent_predictor_calls_match_one_at_a_time(predictor):
    """The real Predictor from two threads at once (what two inference threads do) gives exactly what it gives
    called alone: nothing in the models or the runners is shared between calls."""
    images = [decode_image(jpeg(48 + 8 * i, 40, seed=i)).rgb for i in range(4)]
    alone = [list(predictor.predict_many(images[i:i + 2], batch_size=2)) for i in (0, 2)]
    start = threading.Barrier(2, timeout=20)

    def run(i):
        start.wait()
        return list(predictor.predict_many(images[i:i + 2], batch_size=2))

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, (0, 2)))
    for a, b in zip(sum(alone, []), sum(together, [])):
        assert a.ok and b.ok
        np.testing.assert_array_equal(a.pose.keypoints, b.pose.keypoints)
        np.testing.assert_array_equal(a.seg.mask, b.seg.mask)
        np.testing.assert_array_equal(a.normal.normals, b.normal.normals)
        assert set(a.timings) == set(b.timings)


def test_inference_threads_and_max_batch_options_and_refusals(predictor):
    from sapiens2.cli.serve import resolve_inference_threads, resolve_max_batch
    from sapiens2.errors import UsageError
    from sapiens2.runtime import usable_cores

    assert resolve_inference_threads("auto", torch.device("cpu")) == min(2, usable_cores())
    assert resolve_inference_threads("auto", torch.device("cuda")) == 1
    parse = build_parser("serve").parse_args
    assert parse(["serve"]).inference_threads == "auto"
    assert resolve_inference_threads(parse(["serve", "--inference-threads", "3"]).inference_threads, "cpu") == 3
    assert resolve_max_batch("auto", torch.device("cpu")) == 1  # batches cost per image on a CPU: no gathering
    assert resolve_max_batch("auto", torch.device("cuda")) == 8
    assert resolve_max_batch(parse(["serve", "--max-batch", "4"]).max_batch, torch.device("cpu")) == 4
    for option in ("--inference-threads", "--max-batch"):
        for bad in ("0", "many", "-1"):
            with pytest.raises(SystemExit):
                parse(["serve", option, bad])

    class Compiled(Flaky):
        compile_settings = object()

    with pytest.raises(UsageError, match="one batch at a time"):
        create_app(Compiled(predictor), ServeConfig(inference_threads=2))


# ------------------------------------------------------------------------------------------------ real uvicorn
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app):
    """``app`` under a real uvicorn on 127.0.0.1 (random free port) in a thread; stopped (gracefully) at exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{server.config.port}", server
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()


def test_uvicorn_concurrent_clients_are_batched_and_match_the_predictor(predictor):
    images = [jpeg(48 + 8 * i, 40, seed=i) for i in range(8)]
    forwards_before = predictor.runners["seg"].forward_calls
    # two inference threads: batches may run side by side on the real predictor, answers still match
    app = create_app(predictor, ServeConfig(max_batch=8, batch_wait_ms=150, inference_threads=2,
                                            output_options=OutputOptions(model_names={})))
    with running(app) as (url, _), httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").json()["status"] == "ok"
        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(lambda b: http.post("/v1/predict", params={"encoding": "base64"}, content=b),
                                    images))
        assert [a.status_code for a in answers] == [200] * len(images)
        health = http.get("/health").json()
    assert health["batched_requests"] == len(images) and health["batches"] < len(images)
    assert predictor.runners["seg"].forward_calls - forwards_before == health["batches"]  # one forward per batch
    for data, answer in zip(images, answers):
        rgb = decode_image(data).rgb
        direct = predictor.predict(rgb)
        served = np.asarray(answer.json()["pose"]["people"][0]["keypoints"])
        np.testing.assert_allclose(served[:, :2], direct.pose.keypoints[0], atol=0.02)
        seg = cv2.imdecode(np.frombuffer(base64.b64decode(answer.json()["files"]["seg.png"]["base64"]), np.uint8),
                           cv2.IMREAD_UNCHANGED)
        assert seg.shape == rgb.shape[:2] and (seg == direct.seg.mask).mean() > 0.99  # batch vs single rounding


def test_uvicorn_busy_503_graceful_shutdown_and_loopback_without_key(predictor):
    release = threading.Event()

    class Slow(Flaky):
        def predict_many(self, items, batch_size=None):
            assert release.wait(20)
            return super().predict_many(items, batch_size)

    app = create_app(Slow(predictor), ServeConfig(max_batch=1, batch_wait_ms=0, max_queue=1, api_key="k"))
    with ThreadPoolExecutor(2) as pool:
        with running(app) as (url, server), httpx.Client(base_url=url, timeout=60) as http:
            send = lambda: http.post("/v1/predict", params={"tasks": "pose"}, content=jpeg())  # noqa: E731
            held = pool.submit(send)  # taken by the worker, which waits
            deadline = time.monotonic() + 10
            while app.state.batcher.waiting or app.state.batcher.stats.batches == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            queued = pool.submit(send)
            while not app.state.batcher.waiting:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            busy = send()  # queue full
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]
            server.should_exit = True  # shut down with two requests in flight: both are still answered
            release.set()
            assert held.result(30).status_code == 200 and queued.result(30).status_code == 200


def test_video_clip_returns_tracked_json_lines(client, tmp_path):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (40, 32))
    rng = np.random.default_rng(3)
    for _ in range(5):
        writer.write(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    writer.release()
    r = client.post("/v1/predict/video", params={"max_frames": 3, "tasks": "pose"},
                    files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[0]["format"] == "sapiens2.pose.video" and len(lines) == 1 + 3
    assert all(len(p["keypoints"]) == 308 and "track_id" in p for line in lines[1:] for p in line["people"])
    rid = r.headers["x-result-id"]
    files = client.get(f"/v1/results/{rid}/").json()["files"]
    assert "image.pose.mp4" in files and "image.summary.json" in files and "image.mp4" not in files
    assert client.get("/v1/models").json()["max_video_pixels"] == 300 * 3840 * 2160  # the CLI's default
    bad = client.post("/v1/predict/video", content=b"not a video at all", headers={"content-type": "video/mp4"})
    assert bad.status_code == 422 and bad.json()["error"]
    assert client.post("/v1/predict/video", params={"tasks": "seg"}, content=b"x").status_code == 400


def test_the_serve_command_starts_logs_and_stops_on_sigint(checkpoints, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    command = [sys.executable, "-m", "sapiens2", "serve", "--checkpoint", f"pose={checkpoints['pose']}",
               "--device", "cpu", "--input-size", "128x96", "--detector", "none", "--port", str(port)]
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", content=jpeg(), timeout=60)
        assert r.status_code == 200 and len(r.json()["pose"]["people"][0]["keypoints"]) == 308
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    text = (tmp_path / "serve.log").read_text()
    assert "this machine only" in text and "--host 0.0.0.0" in text
    access = [json.loads(line.split(" ", 1)[1]) for line in text.splitlines() if line.startswith("INFO {")]
    assert {"method": "POST", "path": "/v1/predict", "status": 200}.items() <= access[-1].items()


def test_a_clip_over_the_frames_times_pixels_limit_is_refused_before_decoding(predictor, tmp_path):
    from sapiens2.serving.http.uploads import UploadError, check_video_work

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (40, 32))
    for i in range(6):
        writer.write(np.full((32, 40, 3), 40 * i, np.uint8))
    writer.release()
    assert check_video_work(clip, "clip.mp4", every=1, max_frames=300, max_video_pixels=6 * 40 * 32) == 6
    assert check_video_work(clip, "clip.mp4", every=2, max_frames=300, max_video_pixels=0) == 3
    with pytest.raises(UploadError, match=r"6 frames of 40x32 are 0 megapixels.*--max-video-pixels") as refused:
        check_video_work(clip, "clip.mp4", every=1, max_frames=300, max_video_pixels=6 * 40 * 32 - 1)
    assert refused.value.status == 413
    app = create_app(predictor, ServeConfig(max_batch=1, max_video_pixels=4 * 40 * 32))
    calls = predictor.runners["pose"].forward_calls
    with TestClient(app) as local:
        over = local.post("/v1/predict/video", params={"tasks": "pose"}, content=clip.read_bytes(),
                          headers={"content-type": "video/mp4"})
        assert over.status_code == 413 and "--max-video-pixels" in over.json()["error"]
        assert predictor.runners["pose"].forward_calls == calls  # nothing was predicted
        within = local.post("/v1/predict/video", params={"tasks": "pose", "every": 2}, content=clip.read_bytes(),
                            headers={"content-type": "video/mp4"})  # 3 of the 6 frames: 3 x 40 x 32 pixels
        assert within.status_code == 200, within.text
        assert len(within.text.splitlines()) == 1 + 3
