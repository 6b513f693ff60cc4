"""Dense evaluation metrics on hand-made predictions with known answers; streaming; the report."""
import json
import math

import numpy as np
import pytest

from sapiens2.evaluation import (AlbedoMetrics, NormalMetrics, PointmapMetrics, SegMetrics, format_table, psnr,
                                 save_json)

GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, 2, 2],
               [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 1],
                 [2, 2, 1, 2],
                 [0, 2, 2, 2]])


def test_seg_4x4_by_hand():
    m = SegMetrics(num_classes=3, class_names=("bg", "a", "b"))
    m.update(PRED, GT)
    r = m.compute()
    # class 0: TP 3, FP 1, FN 1 -> 3/5; class 1: TP 4, FP 2 -> 4/6; class 2: TP 4, FN 2 -> 4/6.
    assert r["per_class"]["bg"]["IoU"] == pytest.approx(60.0)
    assert r["per_class"]["a"]["IoU"] == pytest.approx(400 / 6)
    assert r["per_class"]["b"]["IoU"] == pytest.approx(400 / 6)
    assert r["mIoU"] == pytest.approx((60 + 2 * 400 / 6) / 3)
    assert r["aAcc"] == pytest.approx(100 * 11 / 14)  # 2 ignored pixels
    assert r["mAcc"] == pytest.approx(100 * (3 / 4 + 1 + 4 / 6) / 3)
    assert r["per_class"]["a"]["Dice"] == pytest.approx(100 * 8 / 10)
    assert r["num_pixels"] == 14


def test_seg_streaming_absent_class_and_nan_to_num():
    whole = SegMetrics(num_classes=4)
    whole.update(PRED, GT)
    halves = SegMetrics(num_classes=4)
    halves.update(PRED[:2], GT[:2])
    halves.update(PRED[None, 2:], GT[None, 2:])
    a, b = whole.compute(), halves.compute()
    assert a["mIoU"] == pytest.approx(b["mIoU"]) and a["aAcc"] == pytest.approx(b["aAcc"])
    assert math.isnan(a["per_class"]["3"]["IoU"])  # class 3 absent from both: left out of the mean
    assert a["mIoU"] == pytest.approx((60 + 2 * 400 / 6) / 3)
    zeroed = SegMetrics(num_classes=4, nan_to_num=0.0)
    zeroed.update(PRED, GT)
    assert zeroed.compute()["mIoU"] == pytest.approx((60 + 2 * 400 / 6) / 4)


def test_seg_defaults_to_29_named_classes_and_checks_input():
    m = SegMetrics()
    assert len(m.class_names) == 29 and m.class_names[0] == "Background"
    with pytest.raises(ValueError, match="outside"):
        m.update(np.zeros((2, 2), int), np.full((2, 2), 40))
    with pytest.raises(ValueError, match="same shape"):
        m.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="integer"):
        m.update(np.zeros((2, 2)), np.zeros((2, 2), int))
    m.update(np.full((2, 2), 99), np.ones((2, 2), int))  # out-of-range predictions are simply wrong
    assert m.compute()["aAcc"] == 0.0


def _field(vec, h=4, w=5):
    return np.broadcast_to(np.asarray(vec, float), (h, w, 3)).copy()


def test_normal_known_rotations():
    gt = _field([0, 0, 1])
    m = NormalMetrics()
    m.update(_field([1, 0, 0]), gt)  # 90 degrees everywhere
    r = m.compute()
    assert r["mean_deg"] == pytest.approx(90.0) and r["rmse_deg"] == pytest.approx(90.0)
    assert r["median_deg"] == pytest.approx(90.0, abs=0.01)
    assert r["pct_within_30deg"] == 0.0 and r["num_pixels"] == 20
    m = NormalMetrics()
    a = math.radians(10)
    m.update(3 * _field([0, math.sin(a), math.cos(a)]), gt)  # 10 degrees (length does not matter)
    r = m.compute()
    assert r["mean_deg"] == pytest.approx(10.0) and r["median_deg"] == pytest.approx(10.0, abs=0.01)
    assert (r["pct_within_5deg"], r["pct_within_11.25deg"], r["pct_within_30deg"]) == (0.0, 100.0, 100.0)


def test_normal_mask_and_streaming_mixture():
    gt = _field([0, 0, 1])
    pred = gt.copy()
    pred[:2] = [1, 0, 0]  # rows 0-1: 90 degrees; rows 2-3: 0 degrees
    pred[3, 4] = np.nan  # masked out below
    mask = np.ones((4, 5), bool)
    mask[3, 4] = False
    m = NormalMetrics()
    m.update(pred[None], gt[None], mask[None])
    r = m.compute()
    assert r["num_pixels"] == 19
    assert r["mean_deg"] == pytest.approx(90 * 10 / 19)
    assert r["pct_within_11.25deg"] == pytest.approx(100 * 9 / 19)
    assert r["median_deg"] == pytest.approx(90.0, abs=0.01)  # 10 of 19 values are 90
    zero_gt = gt.copy()
    zero_gt[0] = 0  # zero-length ground truth = no label
    m = NormalMetrics()
    m.update(gt, zero_gt)
    assert m.compute()["num_pixels"] == 15 and m.compute()["mean_deg"] == pytest.approx(0.0, abs=1e-6)


def _pointmap(h=12, w=10, f=20.0):
    rng = np.random.default_rng(0)
    z = 2.0 + 0.2 * rng.random((h, w))
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    return np.stack([(u - w / 2) * z / f, (v - h / 2) * z / f, z], -1)


def test_pointmap_uniform_depth_scale():
    gt = _pointmap()
    m = PointmapMetrics()
    m.update(1.1 * gt, gt)
    r = m.compute()
    assert r["abs_rel"] == pytest.approx(0.1) and r["sq_rel"] == pytest.approx(0.01 * gt[..., 2].mean())
    assert (r["delta1_pct"], r["delta2_pct"]) == (100.0, 100.0)
    assert r["dist_m"] == pytest.approx(0.1 * np.linalg.norm(gt, axis=-1).mean())
    assert r["depth_l1_m"] == pytest.approx(0.1 * gt[..., 2].mean())
    assert r["normal_mean_deg"] == pytest.approx(0.0, abs=0.05)  # a scaled pointmap has the same normals
    m = PointmapMetrics(normals=False)
    m.update(1.3 * gt, gt)
    r = m.compute()
    assert r["abs_rel"] == pytest.approx(0.3) and r["delta1_pct"] == 0.0 and r["delta2_pct"] == 100.0
    assert "normal_mean_deg" not in r


def test_pointmap_normals_of_a_rotated_plane():
    u, v = np.meshgrid(np.arange(10.0), np.arange(8.0))
    gt = np.stack([(u - 5) * 2 / 20, (v - 4) * 2 / 20, np.full_like(u, 2.0)], -1)  # plane z = 2: normal (0, 0, 1)
    a = math.radians(20)
    rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    m = PointmapMetrics()
    m.update(gt @ rot.T, gt)  # rotating the points rotates every normal by 20 degrees
    r = m.compute()
    assert r["normal_mean_deg"] == pytest.approx(20.0, abs=1e-3)
    assert (r["normal_pct_within_11.25deg"], r["normal_pct_within_22.5deg"]) == (0.0, 100.0)


def test_pointmap_metres_after_model_scale_and_mask():
    gt = _field([0.0, 0.0, 2.0])
    raw = _field([0.0, 0.0, 2.15]) * 5.0  # canonical output with scale 5
    mask = np.ones((4, 5), bool)
    mask[0, 0] = False
    raw[0, 0] = np.nan
    m = PointmapMetrics(normals=False)
    m.update(raw, gt, mask, pred_scale=5.0)
    r = m.compute()
    assert r["num_points"] == 19
    assert r["dist_m"] == pytest.approx(0.15) and r["l1_m"] == pytest.approx(0.05) and r["z_mae_m"] == \
        pytest.approx(0.15)
    assert (r["pct_within_5cm"], r["pct_within_10cm"], r["pct_within_20cm"]) == (0.0, 0.0, 100.0)
    assert r["abs_rel"] == pytest.approx(0.075)
    neg = PointmapMetrics(normals=False)
    neg.update(-gt, gt)  # a non-positive predicted depth never passes delta
    assert neg.compute()["delta3_pct"] == 0.0
    with pytest.raises(ValueError, match="pred_scale"):
        m.update(raw, gt, pred_scale=0.0)


def test_albedo_psnr_of_known_mse():
    rng = np.random.default_rng(1)
    gt = 0.2 + 0.6 * rng.random((2, 16, 16, 3))
    m = AlbedoMetrics()
    m.update(gt + 0.1, gt)  # MSE 0.01 -> 20 dB
    r = m.compute()
    assert r["psnr"] == pytest.approx(20.0) and r["mae"] == pytest.approx(0.1) and r["rmse"] == pytest.approx(0.1)
    assert r["grad_l1"] == pytest.approx(0.0, abs=1e-12)
    assert psnr(1e-4) == pytest.approx(40.0) and psnr(0.0) == pytest.approx(120.0)
    m8 = AlbedoMetrics(data_range=255.0, ssim=False)
    m8.update(gt * 255 + 25.5, gt * 255)
    assert m8.compute()["psnr"] == pytest.approx(20.0) and "ssim" not in m8.compute()
    same = AlbedoMetrics()
    same.update(gt, gt)
    assert same.compute()["ssim"] == pytest.approx(1.0)
    noisy = AlbedoMetrics()
    noisy.update(gt + 0.3 * rng.standard_normal(gt.shape), gt)
    assert noisy.compute()["ssim"] < 0.9


def test_albedo_mask_and_streaming():
    rng = np.random.default_rng(2)
    gt = rng.random((8, 8, 3))
    pred = gt.copy()
    pred[:4] += 0.2
    mask = np.zeros((8, 8), bool)
    mask[4:] = True  # only the exact half is evaluated
    pred[0, 0] = np.nan
    m = AlbedoMetrics()
    m.update(pred, gt, mask)
    assert m.compute()["mae"] == 0.0 and m.compute()["num_pixels"] == 32
    pred[0, 0] = gt[0, 0] + 0.2
    m.update(pred, gt, ~mask)  # streaming: the second half is off by 0.2 everywhere
    r = m.compute()
    assert r["num_pixels"] == 64 and r["mae"] == pytest.approx(0.1)


def test_report_table_and_json(tmp_path):
    seg = SegMetrics(num_classes=4, class_names=("bg", "a", "b", "c"))
    seg.update(PRED, GT)
    metrics = seg.compute()
    table = format_table(metrics, title="seg")
    assert table.startswith("seg") and "mIoU" in table and "64.4444" in table
    assert "| bg" in table and "nan" in table  # per-class table with the absent class
    path = save_json(metrics, tmp_path / "out" / "metrics.json", task="seg", checkpoint="x.safetensors")
    data = json.loads(path.read_text())
    assert data["task"] == "seg" and data["metrics"]["mIoU"] == pytest.approx(metrics["mIoU"])
    assert data["metrics"]["per_class"]["c"]["IoU"] is None  # NaN written as null (strict JSON)
    assert data["units"]["mIoU"] == data["units"]["aAcc"] == data["units"]["IoU"] == "%"
    row = next(line for line in table.splitlines() if line.startswith("| mIoU "))
    assert row.split("|")[2:4] == [" 64.4444 ", "     % "] and "IoU (%)" in table  # the unit beside each value
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left behind
