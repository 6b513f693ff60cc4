"""The evaluation loop wires datasets, model outputs and metrics correctly: oracle models score perfectly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sapiens2.training.datasets import build_dataset
from sapiens2.data.synth import write_dataset
from sapiens2.evaluation.runner import evaluate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("evalrun"), num=5, seed=11, height=96, width=72, max_people=2,
                         progress=False)


class Replay(nn.Module):
    """Returns precomputed outputs batch by batch (the runner keeps the dataset order)."""

    def __init__(self, outputs, batch_size):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.outputs, self.batch_size, self.calls = outputs, batch_size, 0

    def forward(self, x):
        i = self.calls * self.batch_size
        self.calls += 1
        out = self.outputs(slice(i, i + x.shape[0]))
        return out


def _stack(ds, key):
    return torch.stack([ds[i][key] for i in range(len(ds))])


def test_oracle_pose_heatmaps_give_full_ap(data):
    ds = build_dataset("pose", data, train=False, input_hw=(128, 96), sigma=2.0)
    heatmaps = _stack(ds, "heatmaps")
    res = evaluate(Replay(lambda s: heatmaps[s], 3), ds, batch_size=3)
    assert res["num_instances"] == len(ds)
    assert res["AP"] > 90 and res["PCK@0.05"] > 95 and res["mean_error_box"] < 0.02  # percent; box sides
    # the flip test of a mirror-consistent oracle is still (nearly) perfect
    flipped = Replay(lambda s: heatmaps[s], 3)
    calls = []

    def both(x):
        calls.append(x)
        i = (len(calls) - 1) // 2 * 3
        h = heatmaps[i:i + x.shape[0]]
        if len(calls) % 2 == 0:  # the mirrored crop: mirrored heatmaps, left/right channels swapped
            from sapiens2.tasks.pose import flip_indices
            h = h[:, flip_indices()].flip(-1)
        return h
    flipped.forward = both
    res_flip = evaluate(flipped, ds, batch_size=3, flip_test=True)
    assert res_flip["PCK@0.05"] > 95


def test_oracle_dense_outputs(data):
    for task, key, best in (("normal", "mean_deg", 0.01), ("albedo", "mae", 1e-6), ("pointmap", "dist_m", 1e-5)):
        ds = build_dataset(task, data, train=False, input_hw=(48, 36))
        gt = _stack(ds, task)
        if task == "pointmap":
            scale = torch.full((len(ds), 1), 2.5)
            model = Replay(lambda s: (gt[s] * 2.5, scale[s]), 2)  # canonical = metric * scale
        else:
            model = Replay(lambda s: gt[s], 2)
        assert evaluate(model, ds, batch_size=2)[key] <= best, task


def test_seg_runner_resizes_logits_and_matches_direct_metric(data):
    ds = build_dataset("seg", data, train=False, input_hw=(48, 36))
    labels = _stack(ds, "seg")
    onehot = torch.nn.functional.one_hot(labels, 29).permute(0, 3, 1, 2).float()
    perfect = evaluate(Replay(lambda s: onehot[s], 2), ds, batch_size=2)
    assert perfect["mIoU"] == pytest.approx(100.0) and perfect["aAcc"] == pytest.approx(100.0)
    # half-resolution logits are upsampled to the label size before the argmax
    background = torch.zeros(len(ds), 29, 24, 18)
    background[:, 0] = 1
    res = evaluate(Replay(lambda s: background[s], 2), ds, batch_size=2)
    frac = float((labels == 0).double().mean())
    assert res["aAcc"] == pytest.approx(100 * frac, abs=1e-6)


def test_training_datasets_are_refused(data):
    ds = build_dataset("seg", data, train=True, input_hw=(48, 36))
    with pytest.raises(ValueError, match="recipe=None"):
        evaluate(Replay(lambda s: None, 1), ds)


def test_non_positive_pointmap_scale_is_warned_once_per_evaluation(data, caplog):
    # an untrained scale head: one warning for the run, not one per batch (issue 22: no repeated log lines)
    ds = build_dataset("pointmap", data, train=False, input_hw=(48, 36))
    gt = _stack(ds, "pointmap")
    scale = torch.full((len(ds), 1), -1.0)
    with caplog.at_level("WARNING"):
        evaluate(Replay(lambda s: (gt[s], scale[s]), 1), ds, batch_size=1)
    warnings = [r for r in caplog.records if "non-positive pointmap scale" in r.getMessage()]
    assert len(warnings) == 1 and f"for {len(ds)} of {len(ds)} images" in warnings[0].getMessage()
