"""Pose OKS AP/AR through pycocotools with the 308 sigmas: exact cases, perturbations, NMS, groups, errors."""
import sys

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from sapiens2.data.specs import keypoint_info  # noqa: E402
from sapiens2.evaluation import PoseMetrics, oks_nms  # noqa: E402
from sapiens2.tasks.results import PoseResult  # noqa: E402

K = 308
THRESHOLDS = np.linspace(0.5, 0.95, 10)


def person(rng, x0, y0, size=200.0):
    kp = np.stack([x0 + size * rng.random(K), y0 + size * rng.random(K)], -1)
    return kp


def gt_ann(kp, visible=None):
    v = np.full(K, 2.0) if visible is None else visible
    lo, hi = kp.min(0), kp.max(0)
    return {"keypoints": np.concatenate([kp, v[:, None]], 1), "bbox": [*lo, *(hi - lo)],
            "area": float(np.prod(hi - lo))}


def dataset(seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for i in range(3):
        people = [person(rng, 50 + 300 * j, 40 + 10 * i) for j in range(2)]
        images.append(people)
    return images


def evaluate(images, perturb=lambda kp, rng: kp, drop=(), **kwargs):
    rng = np.random.default_rng(1)
    m = PoseMetrics(**kwargs)
    for i, people in enumerate(images):
        pred = [perturb(kp, rng) for j, kp in enumerate(people) if (i, j) not in drop]
        m.update({"keypoints": np.array(pred).reshape(-1, K, 2), "scores": np.full((len(pred), K), 0.9)},
                 [gt_ann(kp) for kp in people])
    return m.compute()


def test_identical_prediction_gives_ap_1():
    r = evaluate(dataset())
    assert r["AP"] == pytest.approx(100.0) and r["AR"] == pytest.approx(100.0) and r["AP_L"] == pytest.approx(100.0)
    assert r["num_images"] == 3 and r["num_instances"] == 6
    assert np.isnan(r["AP_M"])  # no medium-size person: undefined, not 0


def test_perturbation_lowers_ap_monotonically():
    images = dataset()
    aps = [evaluate(images, lambda kp, rng: kp + rng.normal(0, s, kp.shape)) for s in (1.0, 2.0, 4.0)]
    assert 100.0 > aps[0]["AP"] > aps[1]["AP"] > aps[2]["AP"] > 0.0  # the 308 sigmas are tight (face 0.01)
    assert aps[2]["AP50"] == pytest.approx(100.0) and aps[2]["AP75"] < 100.0  # loose thresholds still match
    missing = evaluate(images, drop={(0, 1)})
    assert missing["AR"] == pytest.approx(100 * 5 / 6) and missing["AP"] < 100.0


def test_single_instance_ap_counts_thresholds_below_its_oks():
    rng = np.random.default_rng(3)
    kp = person(rng, 100, 100)
    ann = gt_ann(kp)
    sigmas = keypoint_info().sigmas.astype(np.float64)
    for shift in (1.0, 2.0, 3.0):
        # COCO OKS with the 308 sigmas: mean_k exp(-d^2 / (2 * area * (2 sigma_k)^2)).
        oks = np.mean(np.exp(-shift ** 2 / (2 * (ann["area"] + np.spacing(1)) * (2 * sigmas) ** 2)))
        assert np.abs(THRESHOLDS - oks).min() > 1e-3, "pick a shift whose OKS is not on a threshold"
        m = PoseMetrics()
        m.update({"keypoints": (kp + [shift, 0.0])[None], "scores": np.ones((1, K))}, [ann])
        r = m.compute()
        # One detection, one person: precision is 1 at every threshold it matches, so AP = % of thresholds.
        assert r["AP"] == pytest.approx(100 * (THRESHOLDS <= oks).mean())
        assert r["AR"] == pytest.approx(100 * (THRESHOLDS <= oks).mean())


def test_groups_and_pose_result_input():
    rng = np.random.default_rng(4)
    kp = person(rng, 0, 0)
    pred = kp.copy()
    face = np.arange(70, 308)
    pred[face] += 40.0  # only the face is wrong
    m = PoseMetrics(groups=True)
    m.update(PoseResult(boxes=np.zeros((1, 4)), box_scores=np.ones(1), keypoints=pred[None],
                        scores=np.ones((1, K))), [gt_ann(kp)])
    r = m.compute()
    assert r["body_AP"] == pytest.approx(100.0) and r["left_hand_AP"] == pytest.approx(100.0)
    assert r["face_AP"] == pytest.approx(0.0) and r["AP"] < 100.0


def test_unlabelled_people_are_ignored_and_scores():
    rng = np.random.default_rng(5)
    a, b = person(rng, 0, 0), person(rng, 400, 0)
    m = PoseMetrics()
    m.update({"keypoints": a[None], "scores": np.ones((1, K))}, [gt_ann(a), gt_ann(b, visible=np.zeros(K))])
    r = m.compute()
    assert r["num_instances"] == 1 and r["AP"] == pytest.approx(100.0) and r["AR"] == pytest.approx(100.0)
    # Official instance score: box score x mean of the keypoint scores above 0.2.
    s = m._instance_scores(np.array([[0.1, 0.5, 0.9]]), np.array([0.5]))
    assert s[0] == pytest.approx(0.5 * 0.7)


def test_oks_nms_drops_duplicates():
    rng = np.random.default_rng(6)
    a, b = person(rng, 0, 0), person(rng, 500, 0)
    kps = np.stack([a, a + 0.5, b])
    keep = oks_nms(kps, np.array([0.8, 0.9, 0.7]), keypoint_info().sigmas, 0.9)
    assert keep.tolist() == [1, 2]
    m = PoseMetrics()
    m.update({"keypoints": kps, "scores": np.ones((3, K))}, [gt_ann(a), gt_ann(b)])
    assert len(m._dts) == 2
    m = PoseMetrics(nms_threshold=None)
    m.update({"keypoints": kps, "scores": np.ones((3, K))}, [gt_ann(a), gt_ann(b)])
    assert len(m._dts) == 3


def test_edge_cases_and_errors(monkeypatch):
    m = PoseMetrics()
    assert np.isnan(m.compute()["AP"])  # nothing added
    kp = person(np.random.default_rng(7), 0, 0)
    m.update({"keypoints": np.zeros((0, K, 2)), "scores": np.zeros((0, K))}, [gt_ann(kp)])
    assert m.compute()["AP"] == 0.0 and m.compute()["AR"] == 0.0  # no detections at all
    with pytest.raises(ValueError, match="already added"):
        m.update({"keypoints": kp[None]}, [], image_id=1)
    with pytest.raises(ValueError, match=r"\(P, 308, 2\)"):
        m.update({"keypoints": np.zeros((1, 17, 2))}, [])
    with pytest.raises(ValueError, match="triplets"):
        m.update({"keypoints": kp[None]}, [{"keypoints": np.zeros(17 * 3)}])
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match="eval"):
        m.compute()
