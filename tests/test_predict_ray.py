"""``sapiens2 predict --engine ray`` on a local Ray (2 CPUs, one instance for the module): the same files as the
local job for good inputs, a manifest row with its reason for every bad one, a killed run resumed without redoing
or losing anything (model calls counted), two workers equal to one, and the Parquet format."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("ray.data", reason="predict --engine ray needs ray[data] (extra: ray or curate)")
pytest.importorskip("pyarrow")

from conftest import write_tiny_checkpoints  # noqa: E402

from sapiens2.cli.main import main  # noqa: E402
from sapiens2.cluster.tables import read_table_dict  # noqa: E402
from sapiens2.serving.ray_engine import PredictInterrupted, RayOptions, predict_ray  # noqa: E402

TASKS = ("pose", "seg")
ROOT = Path(__file__).resolve().parents[1]
TIMING = ("decode_s", "model_s", "write_s")
# one torch thread per worker: much faster than two on a machine whose cores are busy with other work
ONE_WORKER = RayOptions(workers=1, shard_size=2, threads_per_worker=1)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    # the counting factory below is defined here, in a module the workers cannot import: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"), TASKS, (64, 48))


def _kwargs(checkpoints) -> dict:
    return dict(model={t: str(checkpoints[t]) for t in TASKS}, device="cpu", input_size=(64, 48),
                detector="none", batch_size=2)


SETTINGS = {"models": {t: {"file": f"tiny_{t}.safetensors"} for t in TASKS}, "input_size": [64, 48]}

BAD = {"empty.jpg": "empty", "truncated.jpg": "truncated", "text.jpg": "not an image",
       "folder.jpg": "is a directory"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real photo at three small sizes, a folder of video frames, and bad files of every kind."""
    root = tmp_path_factory.mktemp("ray_in")
    photo = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    for name, size in (("astronaut_a.jpg", (48, 48)), ("astronaut_b.png", (40, 56)), ("sub/astronaut_c.jpg", (36, 30))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), cv2.resize(photo, size, interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(0)
    frame = cv2.resize(photo, (32, 40))
    for k in range(2):  # a video as an image-sequence folder: small shifts of one picture
        noisy = np.clip(frame.astype(int) + rng.integers(-8, 9, frame.shape), 0, 255).astype(np.uint8)
        (root / "frames").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "frames" / f"{k:06d}.png"), noisy)
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (32, 40))
    for k in range(3):  # a short video: the photo sliding sideways
        writer.write(np.roll(frame, 2 * k, axis=1))
    writer.release()
    (root / "bad").mkdir()
    (root / "bad" / "empty.jpg").write_bytes(b"")
    good = (root / "astronaut_a.jpg").read_bytes()
    (root / "bad" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "bad" / "text.jpg").write_text("this is not a picture\n")
    (root / "bad" / "folder.jpg").mkdir()
    return root


class CountingFactory:
    """Builds a Predictor in the worker and records every input it is given (one line each, appended).
    ``crash_at``: the worker process dies (``os._exit``, as killed) when the model is about to be given the input
    whose source ends so, once (a marker file says it happened)."""

    def __init__(self, kwargs: dict, counter: Path, crash_at: str = ""):
        self.kwargs, self.counter, self.crash_at = kwargs, str(counter), crash_at

    def __call__(self):
        from sapiens2.inference.predictor import Predictor

        return CountingPredictor(Predictor(list(TASKS), **self.kwargs), self.counter, self.crash_at)


class CountingPredictor:
    def __init__(self, inner, counter: str, crash_at: str = ""):
        self.inner, self.counter, self.crash_at = inner, counter, crash_at
        self.pose_settings, self.max_pixels = inner.pose_settings, inner.max_pixels

    def _count(self, x):
        name = str(x.source) if x.frame_index is None else f"video frame {x.frame_index}"
        if self.crash_at and str(x.source).endswith(self.crash_at):
            import os

            try:
                os.close(os.open(self.counter + ".crashed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # the worker process dies here, mid-shard
        with open(self.counter, "a", encoding="utf-8") as f:
            f.write(f"{name}\n")
        return x

    def predict(self, x):
        return self.inner.predict(self._count(x))

    def predict_many(self, xs):
        return self.inner.predict_many(self._count(x) for x in xs)


def _calls(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def _inputs(calls: list[str], root: Path) -> list[str]:
    """The inputs the model was given (a video once, however many of its frames)."""
    return list(dict.fromkeys(str(root / "clip.mp4") if c.startswith("video frame") else c for c in calls))


VIDEO_TIMING = ("wall_s", "frames_per_second", "model_wait_s", "model_idle_share")


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (a video summary's without its timings)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".ray-parts" not in p.parts and p.name != "manifest.parquet":
            data = p.read_bytes()
            if p.name.endswith(".summary.json"):
                doc = {k: v for k, v in json.loads(data).items() if k not in VIDEO_TIMING}
                data = json.dumps(doc, sort_keys=True).encode()
            files[p.relative_to(folder).as_posix()] = data
    return files


def _manifest(out: Path, drop=TIMING) -> list[dict]:
    m = read_table_dict(out / "manifest.parquet")
    return [{k: m[k][i] for k in m if k not in drop} for i in range(len(m["uid"]))]


@pytest.fixture(scope="module")
def local_run(inputs, checkpoints, tmp_path_factory):
    """The local job over the same inputs, with the same settings."""
    from sapiens2.inference.predictor import Predictor
    from sapiens2.io import discover_inputs
    from sapiens2.serving import PredictJob

    out = tmp_path_factory.mktemp("local_out")
    job = PredictJob(Predictor(list(TASKS), **_kwargs(checkpoints)), TASKS, out, settings=SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray workers below: one thread each (fast on a busy machine)
    try:
        summary = job.run(discover_inputs([inputs]).items)
    finally:
        torch.set_num_threads(threads)
    assert summary.done == 6 and len(summary.failed) == 3  # the folder named like an image is not seen locally
    return out


@pytest.fixture(scope="module")
def ray_run(inputs, checkpoints, local_run, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray_out")
    counter = out.parent / "ray_run.calls"
    summary = predict_ray([inputs], out, TASKS, CountingFactory(_kwargs(checkpoints), counter), settings=SETTINGS,
                          engine=ONE_WORKER)
    return out, summary, _calls(counter)


def test_outputs_equal_the_local_job_and_bad_inputs_have_reasons(inputs, local_run, ray_run):
    out, summary, calls = ray_run
    local = _files(local_run)
    got = _files(out)
    # per image pose.json/png, seg.png/vis, done.json; seg_classes.json per folder (., sub, frames); the video's
    # pose/seg mp4, pose.jsonl, summary, record and per-frame files
    video = [n for n in local if n.startswith("clip")]
    assert set(local) <= set(got) and len(local) - len(video) == 5 * 5 + 3
    assert {"clip.pose.mp4", "clip.seg.mp4", "clip.pose.jsonl", "clip.summary.json", "clip.done.json",
            "clip/000002.seg.png"} <= set(video)
    for name, data in local.items():
        assert got[name] == data, name  # same bytes, completion records included
    assert sorted(calls) == sorted([str(inputs / p) for p in ("astronaut_a.jpg", "astronaut_b.png",
                                                              "sub/astronaut_c.jpg", "frames/000000.png",
                                                              "frames/000001.png")]
                                   + [f"video frame {k}" for k in range(3)])
    rows = {Path(r["input"]).name: r for r in _manifest(out)}
    assert len(rows) == 10 and summary.total == 10 and summary.done == 6 and len(summary.failed) == 4
    clip = rows["clip.mp4"]
    assert clip["status"] == "ok" and clip["people"] == 3 and "clip.pose.jsonl" in clip["outputs"]
    for name, reason in BAD.items():
        assert rows[name]["status"] == "failed" and reason in rows[name]["reason"].lower(), rows[name]
        assert rows[name]["outputs"] == [] and rows[name]["people"] == -1
    a = rows["astronaut_a.jpg"]
    assert a["status"] == "ok" and a["reason"] == "" and (a["height"], a["width"]) == (48, 48)
    assert a["people"] == 1 and not a["whole_image_fallback"]  # --detector none: the whole image is the box
    assert sorted(a["outputs"]) == sorted(f"astronaut_a.{s}" for s in ("pose.json", "pose.png", "seg.png",
                                                                       "seg_vis.png"))
    assert summary.stage_s["decode"] > 0 and summary.stage_s["write"] > 0 and summary.workers == 1
    (usage,) = summary.worker_usage.values()  # one worker did every shard, with one torch and one OpenCV thread
    assert (usage.shards, usage.inputs, usage.torch_threads, usage.cv2_threads) == (summary.shards_run, 6, 1, 1)
    assert usage.cpu_s > 0 and usage.start_cpu_s > 0 and len(summary.spans) == summary.shards_run
    assert summary.startup_s > 0 and summary.steady[0] > 0 and summary.driver_cpu_s > 0
    assert 0 < summary.steady[2] <= 1 + 1e-6  # one actor runs its shards one at a time


def test_killed_run_resumes_on_two_workers_without_redoing_or_losing_inputs(inputs, checkpoints, ray_run,
                                                                            ray_local, tmp_path):
    """Killed after 2 of 6 shards (images in pairs, the video alone) on one worker, finished on two: the same
    manifest and files as the one-worker run in one go, every good input given to a model exactly once."""
    reference, _, _ = ray_run
    out, counter = tmp_path / "out", tmp_path / "calls"
    factory = CountingFactory(_kwargs(checkpoints), counter)
    with pytest.raises(PredictInterrupted):
        predict_ray([inputs], out, TASKS, factory, settings=SETTINGS, engine=ONE_WORKER, stop_after_shards=2)
    parts = list((out / ".ray-parts").rglob("part-*.parquet"))
    assert len(parts) == 2 and not (out / "manifest.parquet").exists()
    first = _inputs(_calls(counter), inputs)
    committed = [r for p in parts for r in read_table_dict(p)["input"]]
    assert len(first) <= 4 and set(first) <= set(committed)  # only the committed shards reached the model
    summary = predict_ray([inputs], out, TASKS, factory, settings=SETTINGS,
                          engine=RayOptions(workers=2, shard_size=2, threads_per_worker=1))
    calls = _calls(counter)
    assert len(calls) == len(set(calls)) == 8, "every good input (5 images, 3 video frames) predicted exactly once"
    assert summary.workers == 2 and summary.shards_run == 4
    usage = list(summary.worker_usage.values())  # which worker got which shard is Ray's choice; the counts add up
    assert 1 <= len(usage) <= 2 and sum(u.shards for u in usage) == 4 and sum(u.inputs for u in usage) == 6 - len(first)
    assert all((u.torch_threads, u.cv2_threads) == (1, 1) for u in usage)
    assert summary.skipped == len(first) and summary.done == 6 - len(first) and summary.predicted == 6 - len(first)
    assert _manifest(out) == _manifest(reference)
    assert _files(out) == _files(reference)
    again = predict_ray([inputs], out, TASKS, factory, settings=SETTINGS, engine=RayOptions(shard_size=2))
    assert len(_calls(counter)) == 8 and again.skipped == 6 and again.done == 0 and again.shards_run == 0
    assert _manifest(out) == _manifest(reference)


def _shard_and_list(inputs: Path, folder: Path) -> tuple[Path, Path]:
    """A WebDataset shard (as ``sapiens2 curate`` writes: <key>.jpg + <key>.json) holding astronaut_a's bytes, and
    a .txt list naming astronaut_b (relative to the list), a bad file and a video."""
    import tarfile

    from sapiens2.data.shards import add_member

    shard = folder / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "0001.jpg", (inputs / "astronaut_a.jpg").read_bytes())
        add_member(tar, "0001.json", b'{"key": "0001"}')
    listing = folder / "list.txt"
    (folder / "astronaut_b.png").write_bytes((inputs / "astronaut_b.png").read_bytes())
    listing.write_text(f"# inputs\nastronaut_b.png\n{inputs / 'bad' / 'text.jpg'}\n{inputs / 'clip.mp4'}\n")
    return shard, listing


def test_parquet_format_from_the_command_line_with_a_shard_and_a_list(inputs, checkpoints, local_run, ray_local,
                                                                      tmp_path, capsys):
    shard, listing = _shard_and_list(inputs, tmp_path)
    out = tmp_path / "out"
    rc = main(["predict", str(inputs / "sub"), str(shard), str(listing),
               "-o", str(out), "--checkpoint", f"pose={checkpoints['pose']}", "--checkpoint",
               f"seg={checkpoints['seg']}", "--input-size", "64x48", "--device", "cpu", "--detector", "none",
               "--no-progress", "--engine", "ray", "--format", "parquet", "--workers", "1", "--shard-size", "8",
               "--threads-per-worker", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "inputs: 5 (3 done, 0 skipped, 2 failed)" in printed and "per-stage time" in printed
    table = read_table_dict(out / "predictions" / "shard-000000.parquet")
    assert [Path(p).name for p in table["input"]] == ["astronaut_c.jpg", "shard.tar#0001.jpg", "astronaut_b.png"]
    for i, name in enumerate(("sub/astronaut_c", "astronaut_a", "astronaut_b")):
        for suffix in ("pose.png", "seg.png", "seg_vis.png"):
            assert table[suffix][i] == (local_run / f"{name}.{suffix}").read_bytes(), (name, suffix)
        doc = json.loads((local_run / f"{name}.pose.json").read_text())
        assert json.loads(table["pose.json"][i])["people"] == doc["people"]
        np.testing.assert_allclose(np.asarray(table["pose_keypoints"][i]),
                                   np.asarray([p["keypoints"] for p in doc["people"]])[..., :2],
                                   atol=0.005 + 1e-4)  # the JSON keeps 2 decimals
    rows = _manifest(out)
    assert [r["outputs"] for r in rows if r["status"] == "ok"] == [["predictions/shard-000000.parquet"]] * 3
    assert [(Path(r["input"]).name, r["status"]) for r in rows][-2:] == [("text.jpg", "failed"), ("clip.mp4", "failed")]
    assert "not an image" in rows[-2]["reason"] and "--format files" in rows[-1]["reason"]  # a video: files only
    assert rows[-1]["outputs"] == [] and rows[-1]["shard"] != rows[-2]["shard"]  # its own shard, nothing written
    assert not list(out.rglob("*.png")) and not list(out.rglob("*.mp4"))  # nothing per input outside the shard
    assert [p.name for p in (out / "predictions").iterdir()] == ["shard-000000.parquet"]


def test_webdataset_shard_holds_the_local_files(inputs, checkpoints, local_run, tmp_path):
    """The webdataset writer without Ray: one shard file, <uid>.<suffix> members with the local job's bytes."""
    from sapiens2.data.shards import iter_tar_samples
    from sapiens2.inference.predictor import Predictor
    from sapiens2.io import load_image
    from sapiens2.serving.bookkeeping import JobPlan
    from sapiens2.serving.ray_engine import RayInput
    from sapiens2.serving.ray_engine.formats import make_sink

    predictor = Predictor(list(TASKS), **_kwargs(checkpoints))
    plan = JobPlan.make(TASKS, tmp_path, settings=SETTINGS).with_pose_settings(predictor)
    path = inputs / "astronaut_b.png"
    rgb = load_image(path).rgb
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the local reference run
    try:
        prediction = predictor.predict(rgb)
    finally:
        torch.set_num_threads(threads)
    sink = make_sink("webdataset", plan, tmp_path, 3)
    item = RayInput(str(path), str(path), relative_name="astronaut_b.png", base="astronaut_b")
    assert sink.add(item, "u1", prediction, rgb, path.read_bytes()) == ["predictions/shard-000003.tar"]
    assert sink.close() == "predictions/shard-000003.tar"
    (key, members), = list(iter_tar_samples(tmp_path / "predictions" / "shard-000003.tar"))
    assert key == "u1" and set(members) == {"png", "json", "pose.json", "pose.png", "seg.png", "seg_vis.png"}
    assert members["png"] == path.read_bytes()
    for suffix in ("pose.png", "seg.png", "seg_vis.png"):
        assert members[suffix] == (local_run / f"astronaut_b.{suffix}").read_bytes(), suffix


def test_worker_killed_mid_shard_and_changed_input(inputs, checkpoints, local_run, ray_local, tmp_path):
    """A worker process dies mid-shard (after the first batch of the shard was written): Ray restarts it and the
    shard is retried, taking the journaled inputs as they are, so no input reaches the model twice and the outputs
    equal the local job's. Then an input file changes: a re-run redoes exactly that input, nothing else."""
    import shutil

    root = tmp_path / "in"
    shutil.copytree(inputs, root)
    out, counter = tmp_path / "out", tmp_path / "calls"
    # shards of 4: [a, b, empty, text], [truncated], [clip.mp4], [frame 0, frame 1, c]; batches of 2: the frames
    # are written (and journaled) before the worker dies on c
    factory = CountingFactory(_kwargs(checkpoints), counter, crash_at="astronaut_c.jpg")
    engine = RayOptions(workers=1, shard_size=4, threads_per_worker=1)
    summary = predict_ray([root], out, TASKS, factory, settings=SETTINGS, engine=engine)
    assert Path(str(counter) + ".crashed").exists(), "the worker was killed"
    calls = [c if c.startswith("video") else Path(c).relative_to(root).as_posix() for c in _calls(counter)]
    assert sorted(calls) == ["astronaut_a.jpg", "astronaut_b.png", "frames/000000.png", "frames/000001.png",
                             "sub/astronaut_c.jpg"] + [f"video frame {k}" for k in range(3)], \
        "every good input predicted exactly once"
    assert summary.done == 6 and summary.skipped == 0 and len(summary.failed) == 4
    assert not list(out.rglob("*.s2tmp*")) and not list((out / ".ray-parts").rglob("journal/*/*"))
    assert len(list((out / ".ray-parts").rglob("part-*.parquet"))) == 4
    got, local = _files(out), _files(local_run)
    assert set(got) == set(local)
    for name, data in local.items():
        if not name.endswith((".done.json", ".summary.json")):  # these name the input, here in another folder
            assert got[name] == data, name
    before = {Path(r["input"]).relative_to(root).as_posix(): r for r in _manifest(out)}
    assert before["astronaut_b.png"]["input_bytes"] == (root / "astronaut_b.png").stat().st_size

    photo = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))  # astronaut_b changes: another size
    cv2.imwrite(str(root / "astronaut_b.png"), cv2.resize(photo, (44, 52), interpolation=cv2.INTER_AREA))
    again = predict_ray([root], out, TASKS, factory, settings=SETTINGS, engine=engine)
    assert _calls(counter)[8:] == [str(root / "astronaut_b.png")], "only the changed input is redone"
    assert again.done == 1 and again.skipped == 5 and again.shards_run == 1
    after = {Path(r["input"]).relative_to(root).as_posix(): r for r in _manifest(out)}
    assert (after["astronaut_b.png"]["height"], after["astronaut_b.png"]["width"]) == (52, 44)
    assert after["astronaut_b.png"]["input_bytes"] == (root / "astronaut_b.png").stat().st_size
    drop = ("input_bytes", "input_modified_ns", "height", "width", "people", "outputs")
    assert ({k: {c: v for c, v in r.items() if c not in drop} for k, r in after.items()}
            == {k: {c: v for c, v in r.items() if c not in drop} for k, r in before.items()})
    record = json.loads((out / "astronaut_b.done.json").read_text())
    assert record["input_file"]["bytes"] == (root / "astronaut_b.png").stat().st_size


def test_steady_state_counts_shards_inside_the_window():
    """From the last worker ready (t=10) to the last shard's end (t=14): a shard half inside counts half its inputs;
    a shard before the window none; two workers side by side are 2 busy, one alone 1."""
    from sapiens2.serving.ray_engine.usage import ShardSpan, steady_state

    spans = [ShardSpan(5, 9, 8), ShardSpan(8, 12, 8), ShardSpan(10, 14, 8), ShardSpan(12, 14, 4)]
    rate, window, busy = steady_state(spans, ready_at=10)
    assert window == 4 and rate == pytest.approx((4 + 8 + 4) / 4) and busy == pytest.approx((2 + 4 + 2) / 4)
    assert steady_state(spans, ready_at=14) is None and steady_state([], ready_at=0) is None
