"""End-to-end curation on Ray Data: a generated collection of synthetic humans and negatives, every negative dropped
for its reason, copies caught, shards readable, a killed run resumed to the same manifest, the shipped HOG detector
in the pipeline, CLIP thresholds, and the same run on a two-node local Ray cluster."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="curation needs the curate extra (ray[data], pandas)")
pytest.importorskip("transformers")
pytest.importorskip("pyarrow")

from test_curation_helpers import (build_collection, collection_inputs, curation_config,  # noqa: E402
                                   write_linear_head, write_tiny_clip)

from sapiens2.curation import CurationInterrupted, curate, iter_shards, read_manifest  # noqa: E402

COMPARED = ("uid", "source", "drop_reason", "width", "height", "sha1", "phash", "num_persons", "head_visible",
            "text_lines", "duplicate_of", "shard", "kept")
SCORES = ("blur", "contrast", "text_area", "head_yaw", "clip_photo_prob", "aesthetic")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("curation")
    expected = build_collection(root)
    write_tiny_clip(root / "clip")
    write_linear_head(root / "aesthetic.pth")
    return root, expected


@pytest.fixture(scope="module")
def full_run(collection, ray_local):
    root, expected = collection
    result = curate(collection_inputs(root), root / "out", curation_config(root))
    return root, expected, result, read_manifest(result.manifest)


def _by_name(manifest):
    return {Path(s.split("#")[-1]).name: i for i, s in enumerate(manifest["source"])}


def test_every_input_gets_its_reason(full_run):
    root, expected, result, m = full_run
    names = _by_name(m)
    assert set(names) == set(expected), "the manifest must list every input exactly once"
    got = {name: m["drop_reason"][i] for name, i in names.items()}
    assert got == expected
    assert result.total == len(expected) and result.kept == sum(1 for r in expected.values() if not r)
    i = names["corrupt.jpg"]
    assert "truncated" in m["error"][i] and m["drop_stage"][i] == "read"
    # copies point at the original they duplicate
    assert m["duplicate_of"][names["pos0_copy.jpg"]] == m["uid"][names["pos0.jpg"]]
    assert m["duplicate_of"][names["copy_near.jpg"]] == m["uid"][names["pos1.jpg"]]
    assert m["duplicate_of"][names["copy_crop.jpg"]] == m["uid"][names["pos2.jpg"]]
    assert m["duplicate_score"][names["copy_crop.jpg"]] >= 0.99
    # scores of stages that ran are recorded, stages that did not run are empty
    pos = names["pos0.jpg"]
    assert m["num_persons"][pos] == 1 and m["head_visible"][pos] == 1
    assert np.isfinite(m["aesthetic"][pos]) and 0 <= m["clip_photo_prob"][pos] <= 1
    assert m["num_persons"][names["flat.jpg"]] == -1 and np.isnan(m["aesthetic"][names["flat.jpg"]])
    assert m["text_area"][names["text_overlay.jpg"]] > 0.03 > m["text_area"][pos]


def test_shards_load_with_boxes_and_scores(full_run):
    root, expected, result, m = full_run
    shard_dir = root / "out" / "shards"
    index = json.loads((shard_dir / "index.json").read_text())
    kept = [i for i, k in enumerate(m["kept"]) if k]
    assert index["total"] == len(kept) == result.kept
    assert [e["name"] for e in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(len(index["shards"]))]
    assert all(e["count"] <= 3 for e in index["shards"])
    samples = list(iter_shards(shard_dir))
    assert [k for k, _, _ in samples] == sorted(m["uid"][i] for i in kept)
    names = _by_name(m)
    for key, rgb, meta in samples:
        i = m["uid"].index(key)
        assert rgb.shape == (m["height"][i], m["width"][i], 3) and rgb.dtype == np.uint8
        assert meta["key"] == key and meta["persons"][0]["box"] == json.loads(m["persons"][i])[0]["box"]
        assert meta["scores"]["aesthetic"] == pytest.approx(m["aesthetic"][i])
        assert m["shard"][i] in {e["name"] for e in index["shards"]}
    # JPEG inputs are copied byte for byte
    key = m["uid"][names["pos0.jpg"]]
    import tarfile

    tar_name = m["shard"][names["pos0.jpg"]]
    with tarfile.open(shard_dir / tar_name) as tar:
        assert tar.extractfile(f"{key}.jpg").read() == (root / "images" / "pos0.jpg").read_bytes()


def test_report_is_written(full_run):
    root, expected, result, m = full_run
    report = root / "out" / "report"
    summary = json.loads((report / "summary.json").read_text())
    funnel = {f["stage"]: f for f in summary["funnel"]}
    assert funnel["read"]["in"] == len(expected) and funnel["balance"]["out"] == result.kept
    assert funnel["quality"]["by_reason"] == {"too_small": 1, "flat": 1, "overexposed": 1, "underexposed": 1,
                                              "blurry": 1}
    assert funnel["dedup"]["dropped"] == 3
    assert "hist_blur.png" in summary["plots"] and (report / "hist_blur.png").stat().st_size > 1000
    page = (report / "index.html").read_text()
    assert "duplicate_near" in page and "corrupt" in page
    assert len(list((report / "thumbs").glob("*.jpg"))) >= 5


def _columns(m, names=COMPARED):
    order = np.argsort(m["uid"])
    return {k: [m[k][i] for i in order] for k in names}


def _assert_same_manifest(a, b):
    assert _columns(a) == _columns(b)
    for k in SCORES:
        np.testing.assert_allclose(np.asarray(_columns(a, (k,))[k], float), np.asarray(_columns(b, (k,))[k], float),
                                   rtol=1e-5, atol=1e-6, equal_nan=True)


def test_killed_run_resumes_to_the_same_manifest(full_run, ray_local):
    root, expected, result, m = full_run
    out = root / "resumed"
    with pytest.raises(CurationInterrupted):
        curate(collection_inputs(root), out, curation_config(root), stop_after_batches=1)
    parts = list((out / "parts").rglob("part-*.parquet"))
    # exactly one batch committed, however far the streaming executor ran ahead of the driver
    assert len(parts) == 1 and not (out / "manifest.parquet").exists()
    done = sum(len(read_manifest(p)["uid"]) for p in parts)
    assert 0 < done <= curation_config(root)["ray"]["batch_size"] < len(expected)
    assert not list((out / "parts").rglob(".commit-budget"))
    again = curate(collection_inputs(root), out, curation_config(root))
    _assert_same_manifest(read_manifest(again.manifest), m)
    assert (out / "shards" / "index.json").read_bytes() == (root / "out" / "shards" / "index.json").read_bytes()


def test_clip_stage_can_be_turned_off(collection, ray_local, tmp_path):
    """``--clip-model none`` (the way out the missing-CLIP message offers): the run completes without CLIP scores,
    embedding de-duplication or balancing; everything else still decides."""
    root, expected = collection
    result = curate(collection_inputs(root), tmp_path / "out", curation_config(root, clip={"model": "none",
                                                                                          "aesthetic_head": ""}))
    m = read_manifest(result.manifest)
    reasons = {Path(s.split("#")[-1]).name: m["drop_reason"][i] for i, s in enumerate(m["source"])}
    assert set(reasons) == set(expected) and reasons["corrupt.jpg"] == expected["corrupt.jpg"]
    assert "duplicate_embedding" not in reasons.values() and reasons["pos0_copy.jpg"] == "duplicate_exact"
    assert all(np.isnan(v) for v in m["clip_photo_prob"]) and set(m["cluster"]) == {-1}


def test_clip_stage_thresholds_drop(collection):
    """The CLIP stage itself (no Ray): real tiny CLIP, real head file; thresholds give not_photo / low_aesthetic."""
    from sapiens2.curation.clip_stage import ClipStage
    from sapiens2.curation.columns import batch_to_rows, new_row, rows_to_batch
    from sapiens2.curation.config import load_config
    from sapiens2.curation.decode import decode_row
    from sapiens2.curation.sources import list_inputs

    root, _ = collection

    def run(**clip):
        cfg = load_config(curation_config(root, clip=clip))
        rows = [new_row(it) for it in list_inputs([root / "images" / "pos0.jpg", root / "images" / "pos1.jpg"])]
        for row in rows:
            decode_row(row, cfg)
        return batch_to_rows(ClipStage(cfg)(rows_to_batch(rows)))

    base = run()
    assert [r["drop_reason"] for r in base] == ["", ""]
    for r in base:
        assert r["embedding"].shape == (16,) and np.linalg.norm(r["embedding"]) == pytest.approx(1, abs=1e-5)
        assert 0 < r["clip_photo_prob"] < 1 and 0 < r["clip_text_prob"] < 1
    assert [r["drop_reason"] for r in run(min_photo_prob=1.01)] == ["not_photo", "not_photo"]
    assert [r["drop_reason"] for r in run(max_text_prob=-0.01)] == ["clip_text", "clip_text"]
    a = sorted(r["aesthetic"] for r in base)
    cut = (a[0] + a[1]) / 2
    reasons = {r["aesthetic"] < cut: r["drop_reason"] for r in run(min_aesthetic=cut)}
    assert reasons == {True: "low_aesthetic", False: ""}


HOG_POSITIVE = (0, 8)  # synthetic (seed, index) at 512x384 that the shipped HOG detector finds


def test_shipped_hog_detector_in_the_pipeline(collection, ray_local, tmp_path):
    from sapiens2.data.synth import generate_sample
    from sapiens2.io import write_image

    root, _ = collection
    s = generate_sample(*HOG_POSITIVE, 512, 384, 1)
    write_image(tmp_path / "person.jpg", s["image"])
    shutil.copy(root / "images" / "no_person.jpg", tmp_path / "scene.jpg")
    cfg = curation_config(root, person={"detector": "hog", "min_box_short_side": 32},
                      head={"method": "cascade", "require_head": False})
    r = curate([tmp_path], tmp_path / "out", cfg)
    m = read_manifest(r.manifest)
    got = {Path(s).name: (m["drop_reason"][i], m["num_persons"][i]) for i, s in enumerate(m["source"])}
    assert got["scene.jpg"] == ("no_person", 0)
    assert got["person.jpg"][0] == "" and got["person.jpg"][1] >= 1
    box = np.asarray(json.loads(m["persons"][m["source"].index(str(tmp_path / "person.jpg"))])[0]["box"])
    gx, gy, gw, gh = s["boxes"][0]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert gx <= cx <= gx + gw and gy <= cy <= gy + gh, "the HOG box must sit on the rendered person"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(args: list[str], env: dict) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group, so the test stops exactly what it started."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen([ray_bin, "start", "--block", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _stop_node(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


_WAIT_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], configure_logging=False, log_to_driver=False)
deadline = time.time() + 90
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(0.5)
print(len([n for n in ray.nodes() if n["Alive"]]))
"""


@pytest.mark.slow
def test_two_node_local_cluster_gives_identical_results(full_run, tmp_path):
    """A head and a worker node (``ray start`` on loopback, one CPU each); the CLI connects with --address."""
    root, expected, result, m = full_run
    port = _free_port()
    # loopback-only test cluster: no auth token to share between the processes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "disabled"}
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    nodes = [_start_node(["--head", "--port", str(port), "--include-dashboard", "false", *common], env)]
    try:
        import time

        deadline = time.time() + 60
        while time.time() < deadline:  # the worker node needs the head's GCS to be listening
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        nodes.append(_start_node(["--address", address, *common], env))
        alive = subprocess.run([sys.executable, "-c", _WAIT_NODES, address], env=env, capture_output=True,
                               text=True, timeout=150)
        assert alive.stdout.strip().endswith("2"), alive.stderr[-2000:]
        config = tmp_path / "curate.yaml"
        import yaml

        config.write_text(yaml.safe_dump(curation_config(root)))
        out = tmp_path / "out"
        proc = subprocess.run([sys.executable, "-m", "sapiens2.cli.curate", *collection_inputs(root), "-o", str(out),
                               "--config", str(config), "--address", address],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert f"{result.kept} of {result.total} images kept" in proc.stdout
    finally:
        for node in reversed(nodes):
            _stop_node(node)
    _assert_same_manifest(read_manifest(out / "manifest.parquet"), m)
    assert (out / "shards" / "index.json").read_bytes() == (root / "out" / "shards" / "index.json").read_bytes()
