"""Curation building blocks without Ray: config, sources, quality, hashing, text, head pose, heads, prompts,
de-duplication, balancing, shards."""
from __future__ import annotations

import io
import json
import math
import tarfile

import cv2
import numpy as np
import pytest

from sapiens2.curation.balance import balanced_selection, hierarchical_kmeans, kmeans, water_fill
from sapiens2.curation.config import CurationConfigError, QualityConfig, TextConfig, load_config
from sapiens2.curation.dedup import embedding_duplicates, greedy_prune
from sapiens2.curation.head_pose import head_pose_from_face_points
from sapiens2.curation.phash import hamming, near_duplicate_pairs, perceptual_hash
from sapiens2.curation.prompts import group_probabilities, merged_prompts
from sapiens2.curation.quality import quality_metrics, quality_reason
from sapiens2.curation.text_detect import text_area_fraction


def _scene(seed=0, h=512, w=384):
    from sapiens2.data.synth import generate_sample

    return generate_sample(seed, 0, h, w, 1)["image"]


def test_config_yaml_partial_and_errors(tmp_path):
    path = tmp_path / "curate.yaml"
    path.write_text("person: {min_box_short_side: 256}\nbalance: {clusters: [100, 10], cap_per_cluster: 5}\n")
    cfg = load_config(path)
    assert cfg.person.min_box_short_side == 256 and cfg.balance.clusters == [100, 10]
    assert cfg.quality.min_short_side == 384  # untouched defaults
    with pytest.raises(CurationConfigError, match="unknown key"):
        load_config({"person": {"min_box": 1}})
    with pytest.raises(CurationConfigError, match="number"):
        load_config({"quality": {"min_blur": "sharp"}})


def test_sources_folder_tar_list_and_uri(tmp_path):
    from sapiens2.curation.sources import list_inputs, read_item_bytes, read_sidecar

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"jpegbytes")
    (tmp_path / "a" / "x.json").write_text('{"boxes": [[1, 2, 3, 4]]}')
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (("k1.png", b"pngdata"), ("k1.json", b'{"boxes": []}'), ("notes.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "l.txt").write_text("a/x.jpg\nmissing.jpg\n")
    rows = list_inputs([tmp_path / "a", tmp_path / "s.tar", tmp_path / "l.txt"])
    assert [r["source"].split("/")[-1] for r in rows] == ["x.jpg", "s.tar#k1.png", "missing.jpg"]  # x.jpg once
    assert read_item_bytes(rows[0]) == b"jpegbytes" and read_sidecar(rows[0]) == {"boxes": [[1, 2, 3, 4]]}
    assert read_item_bytes(rows[1]) == b"pngdata" and read_sidecar(rows[1]) == {"boxes": []}
    with pytest.raises(OSError):
        read_item_bytes(rows[2])
    pytest.importorskip("pyarrow")
    uri_rows = list_inputs(f"file://{tmp_path / 'a'}")
    assert len(uri_rows) == 1 and read_item_bytes(uri_rows[0]) == b"jpegbytes" and uri_rows[0]["sidecar"]


def test_quality_reasons():
    cfg = QualityConfig(min_short_side=256)
    img = _scene()
    assert quality_reason(quality_metrics(img), cfg) == ""
    assert quality_reason(quality_metrics(cv2.GaussianBlur(img, (0, 0), 8)), cfg) == "blurry"
    assert quality_reason(quality_metrics(np.full_like(img, 128)), cfg) == "flat"
    assert quality_reason(quality_metrics(cv2.resize(img, (150, 200))), cfg) == "too_small"
    dark = img.copy()
    dark[150:] = 0
    assert quality_reason(quality_metrics(dark), cfg) == "underexposed"


def test_phash_near_copies_and_band_search():
    a, b = _scene(0), _scene(1)
    small = cv2.resize(a, (288, 384), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])
    requant = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    ha, hb, hc = perceptual_hash(a), perceptual_hash(b), perceptual_hash(requant)
    assert hamming(ha, hc) <= 4 < 16 < hamming(ha, hb)
    rng = np.random.default_rng(0)
    hashes = [int(v) for v in rng.integers(0, 2**63, 300)]
    hashes.append(hashes[5] ^ 0b1011)  # 3 bits from #5
    brute = sorted((i, j, hamming(hashes[i], hashes[j])) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                   if hamming(hashes[i], hashes[j]) <= 6)
    assert near_duplicate_pairs(hashes, 6) == brute and (5, 300, 3) in brute


def test_text_detector_separates_overlays():
    img = _scene()
    text = img.copy()
    cv2.putText(text, "SALE 50% OFF", (10, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (255, 255, 255), 3)
    clean, _ = text_area_fraction(img, TextConfig())
    with_text, lines = text_area_fraction(text, TextConfig())
    assert clean < 0.03 < with_text and lines >= 1


def _face_points(yaw_deg, pitch_deg, r=20.0, centre=(100.0, 100.0)):
    """Project the documented head model (eyes at +-30 deg, nose 1.2 R forward, 0.7 R down) orthographically."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    pts = {"nose": np.array([0, -0.7 * r, 1.2 * r]), "left_eye": np.array([r * 0.5, 0, r * math.cos(math.pi / 6)]),
           "right_eye": np.array([-r * 0.5, 0, r * math.cos(math.pi / 6)])}
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), math.sin(pitch)], [0, -math.sin(pitch), math.cos(pitch)]])  # up > 0
    out = np.zeros((5, 3))
    for k, name in enumerate(("nose", "left_eye", "right_eye")):
        p = rx @ ry @ pts[name]
        out[k] = (centre[0] + p[0], centre[1] - p[1], 1.0)  # image y points down
    return out


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (30, 0), (-45, 0), (0, 20), (0, -25)])
def test_head_pose_recovers_the_model_angles(yaw, pitch):
    visible, est_yaw, est_pitch = head_pose_from_face_points(_face_points(yaw, pitch), 0.3)
    assert visible and est_yaw == pytest.approx(yaw, abs=0.5) and est_pitch == pytest.approx(pitch, abs=0.5)


def test_head_pose_profile_and_invisible():
    pts = np.zeros((5, 3))
    pts[0] = (120, 100, 1)
    pts[4] = (100, 95, 1)  # right ear only, nose to its right
    assert head_pose_from_face_points(pts, 0.3)[:2] == (True, 90.0)
    assert head_pose_from_face_points(np.zeros((5, 3)), 0.3)[0] is False


def test_aesthetic_head_formats(tmp_path):
    torch = pytest.importorskip("torch")
    from sapiens2.curation.aesthetic import load_linear_head
    from sapiens2.errors import CheckpointError

    x = np.random.default_rng(0).normal(size=(4, 8))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    lin = torch.nn.Linear(8, 1).double()
    torch.save(lin.state_dict(), tmp_path / "linear.pth")
    expect = lin(torch.from_numpy(xn)).detach().numpy()[:, 0]
    np.testing.assert_allclose(load_linear_head(tmp_path / "linear.pth")(x), expect, rtol=1e-10)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Dropout(0.2), torch.nn.Linear(6, 1)).double().eval()
    torch.save({f"module.layers.{k}": v for k, v in mlp.state_dict().items()}, tmp_path / "mlp.pth")
    expect = mlp(torch.from_numpy(xn)).detach().numpy()[:, 0]
    np.testing.assert_allclose(load_linear_head(tmp_path / "mlp.pth")(x), expect, rtol=1e-10)
    torch.save({"proj.weight": torch.zeros(1, 8)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_linear_head(tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="expects 8-d"):
        load_linear_head(tmp_path / "linear.pth")(np.zeros((1, 5)))


def test_prompt_probabilities():
    prompts = merged_prompts({"person_photo": ["a photo of a person"]})
    groups = [g for g, texts in prompts.items() for _ in texts]
    sim = np.zeros((1, len(groups)))
    sim[0, groups.index("person_photo")] = 0.3
    p = group_probabilities(sim, groups, ["person_photo", "drawing"], 100.0)
    assert p[0, 0] > 0.99 and p[0].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown prompt group"):
        merged_prompts({"cats": ["a cat"]})


def test_greedy_prune_keeps_the_best_of_each_group():
    dropped, partner, _ = greedy_prune(np.array([2, 0, 1, 3]), [(0, 1, 0.9), (1, 2, 0.95)], 4)
    assert dropped.tolist() == [False, True, False, False] and partner[1] == 2  # 0 and 2 are not duplicates
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x = np.concatenate([x, x[:5] + 1e-3])  # 5 near copies
    dropped, partner, score = embedding_duplicates(x, 0.999, np.arange(55), chunk=16)
    assert dropped.sum() == 5 and partner[50:].tolist() == [0, 1, 2, 3, 4] and (score[50:] > 0.999).all()


def _blobs(sizes, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[: len(sizes)] * 5
    return np.concatenate([c + rng.normal(scale=0.3, size=(n, dim)) for c, n in zip(centres, sizes)])


def test_kmeans_and_cap_on_a_dominant_cluster():
    x = _blobs([200, 20, 20])
    labels, _ = kmeans(x, 3, seed=0)
    assert sorted(np.bincount(labels).tolist()) == [20, 20, 200]
    uids = [f"{i:04d}" for i in range(len(x))]
    keep = balanced_selection(labels[:, None], uids, cap_per_cluster=20)
    assert sorted(np.bincount(labels[keep]).tolist()) == [20, 20, 20] and keep.sum() == 60
    assert (balanced_selection(labels[:, None], uids, cap_per_cluster=20) == keep).all()  # deterministic
    h = hierarchical_kmeans(x, [6, 3], seed=0)
    assert h.shape == (240, 2) and len(np.unique(h[:, 1])) == 3
    keep = balanced_selection(h, uids, target_total=60)
    top = np.bincount(h[keep, 1], minlength=3)
    assert keep.sum() == 60 and top.max() - top.min() <= 1  # the budget is spread over the top clusters
    assert water_fill([5, 100, 100], 65) == [5, 30, 30]


def test_shards_round_trip(tmp_path):
    from sapiens2.curation.shards import iter_shards, list_shards, write_index, write_shard
    from sapiens2.io import write_image

    img = _scene()
    write_image(tmp_path / "a.png", img)  # not a JPEG: re-encoded
    write_image(tmp_path / "b.jpg", img)  # a JPEG: copied
    samples = [{"row": {"source": str(tmp_path / n), "path": str(tmp_path / n), "offset": -1, "size": -1},
                "meta": {"key": k, "persons": [{"box": [1, 2, 3, 4]}]}} for n, k in (("a.png", "k0"), ("b.jpg", "k1"))]
    shard_dir = tmp_path / "shards"
    assert write_shard(shard_dir / "shard-000000.tar", samples) == 2
    write_index(shard_dir, [{"name": "shard-000000.tar", "count": 2, "fingerprint": "x"}])
    got = list(iter_shards(shard_dir))
    assert [k for k, _, _ in got] == ["k0", "k1"] and got[1][2]["persons"][0]["box"] == [1, 2, 3, 4]
    assert np.abs(got[0][1].astype(int) - img).mean() < 3 and got[0][1].shape == img.shape
    with tarfile.open(shard_dir / "shard-000000.tar") as tar:
        assert tar.extractfile("k1.jpg").read() == (tmp_path / "b.jpg").read_bytes()
        assert json.loads(tar.extractfile("k0.json").read())["key"] == "k0"
    assert list_shards(shard_dir) == [shard_dir / "shard-000000.tar"]


def _write_budgeted(args):
    from sapiens2.curation.columns import new_row, rows_to_batch
    from sapiens2.curation.parts import write_part

    folder, names, budget = args
    rows = [new_row({"uid": n, "source": n, "path": n, "member": "", "offset": -1, "size": -1, "sidecar": ""})
            for n in names]
    return bool(write_part(rows_to_batch(rows), folder, commit_budget=budget)["committed"].all())


def test_commit_budget_commits_exactly_k_parts_across_processes(tmp_path):
    """The resume demo's crash is a count of committed parts, claimed atomically by the writers, not a race between
    the driver and Ray Data's streaming executor (which often wrote every part before the driver saw the first)."""
    pytest.importorskip("pyarrow")
    import multiprocessing as mp

    from sapiens2.curation.parts import done_uids, reset_commit_budget

    jobs = [(str(tmp_path), [f"u{i}a", f"u{i}b"], 3) for i in range(8)]
    with mp.get_context("spawn").Pool(4) as pool:
        committed = pool.map(_write_budgeted, jobs)
    assert sum(committed) == 3 and len(list(tmp_path.glob("part-*.parquet"))) == 3
    assert len(done_uids(tmp_path)) == 6
    reset_commit_budget(tmp_path)
    assert _write_budgeted((str(tmp_path), ["again"], 1)) and "again" in done_uids(tmp_path)


# -- models checked before Ray starts (issue 22 item 16) ---------------------------------------------------------
def _no_ray(monkeypatch) -> list[str]:
    """Any start of Ray is recorded (and refused): the checks must come first."""
    import sapiens2.curation.pipeline as pipeline

    started: list[str] = []

    def refuse(*a, **k):
        started.append("ray")
        raise AssertionError("Ray was started before the models were checked")

    monkeypatch.setattr(pipeline, "connect_ray", refuse)
    try:
        import ray

        monkeypatch.setattr(ray, "init", refuse)
    except ImportError:
        pass
    return started


def test_curate_without_a_cached_clip_fails_before_ray_in_one_line(tmp_path, monkeypatch, caplog):
    import argparse
    import logging

    from sapiens2.cli import curate as cli

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    started = _no_ray(monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), _scene())
    parser = argparse.ArgumentParser()
    cli.add_parser(parser)
    with caplog.at_level(logging.ERROR):
        code = cli.run(parser.parse_args([str(photos), "-o", str(tmp_path / "out")]))
    assert code == 1 and started == []
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    msg = errors[0]
    assert "CLIP model 'openai/clip-vit-base-patch32'" in msg and "offline" in msg
    assert "`hf download openai/clip-vit-base-patch32`" in msg  # how to fetch it
    assert "--clip-model /path/to/folder" in msg and "--clip-model none" in msg  # a local copy, or the stage off


def test_model_checks_name_the_model_and_the_way_out(tmp_path, monkeypatch):
    from sapiens2.curation.pipeline import curate
    from sapiens2.errors import ModelNotAvailableError

    started = _no_ray(monkeypatch)
    photos = tmp_path / "photos"
    photos.mkdir()
    cases = [
        ({"person": {"detector": "onnx", "model_path": str(tmp_path / "det.onnx")}}, ["det.onnx", "--detector hog"]),
        ({"clip": {"model": str(tmp_path / "no_such_clip")}}, ["no_such_clip", "--clip-model none"]),
        ({"clip": {"model": "none", "aesthetic_head": "head.pth"}}, ["aesthetic_head", "CLIP stage is off"]),
    ]
    (tmp_path / "clip_folder").mkdir()
    cases.append(({"clip": {"model": str(tmp_path / "clip_folder")}}, ["config.json", "save_pretrained"]))
    for cfg, words in cases:
        with pytest.raises(ModelNotAvailableError) as info:
            curate([photos], tmp_path / "out", cfg)
        assert all(w in str(info.value) for w in words), (cfg, str(info.value))
    assert started == [] and not (tmp_path / "out").exists()


def test_actor_stages_use_compute_strategies_not_deprecated_concurrency(tmp_path):
    """Ray Data deprecated ``concurrency`` (2.51): actor pools are given as ``compute=ActorPoolStrategy``."""
    ray_data = pytest.importorskip("ray.data")
    from types import SimpleNamespace

    from sapiens2.curation.clip_stage import ClipStage
    from sapiens2.curation.pipeline import build_per_image_dataset

    calls = []

    class Recorder:
        def map_batches(self, fn, **kwargs):
            calls.append((fn, kwargs))
            return self

    fake_ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0},
                               data=SimpleNamespace(from_items=lambda items, **k: Recorder(),
                                                    ActorPoolStrategy=ray_data.ActorPoolStrategy))
    build_per_image_dataset(fake_ray, [{"uid": "a"}], load_config(None), tmp_path)
    assert calls and all("concurrency" not in kwargs for _, kwargs in calls)
    actors = [kwargs for fn, kwargs in calls if isinstance(fn, type)]
    assert len(actors) == 2 and all(isinstance(k["compute"], ray_data.ActorPoolStrategy) for k in actors)
    calls.clear()
    build_per_image_dataset(fake_ray, [{"uid": "a"}], load_config({"clip": {"model": "none"}}), tmp_path)
    assert ClipStage not in [fn for fn, _ in calls]
