"""Learning on synthetic humans, one test per task (seg also with the official augmentations; tiny arch, CPU): the
training loss at least halves and the metric on held-out images (another generator seed) is compared with the task's
trivial baseline, computed on the same held-out images through the same ``evaluate`` code by a constant "model":

- seg: always background (mIoU);  pose: the mean training pose in the crop (PCK@0.1; OKS AP is 0 for every
  model at this size: 308 points, most of them face points with tiny sigmas);  normal: the mean training normal
  (mean angular error);  pointmap: the mean training point (mean distance, m);  albedo: the mean training
  albedo (MAE).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sapiens2.training.datasets import build_dataset
from sapiens2.data.synth import write_dataset
from sapiens2.evaluation.runner import evaluate
from sapiens2.training.config import load_config
from sapiens2.training.trainer import Trainer, build_training_model

TRAIN_IMAGES, HELD_OUT_IMAGES = 320, 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def humans(tmp_path_factory):
    """(train, held-out) folders: one person per image, rendered at 128x96, the held-out set from another seed."""
    root = tmp_path_factory.mktemp("learning")
    train = write_dataset(root / "train", num=TRAIN_IMAGES, seed=0, height=128, width=96, max_people=1,
                          progress=False)
    held_out = write_dataset(root / "held_out", num=HELD_OUT_IMAGES, seed=1, height=128, width=96, max_people=1,
                             progress=False)
    return train, held_out


class ConstantModel(nn.Module):
    """The trivial predictor: the same output for every image (pointmap: with scale 1, i.e. metric points)."""

    def __init__(self, value: torch.Tensor, with_scale: bool = False):
        super().__init__()
        self.register_buffer("value", value.float())
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate() reads the device from the parameters
        self.with_scale = with_scale

    def forward(self, images: torch.Tensor):
        out = self.value.expand(images.shape[0], *self.value.shape).clone()
        return (out, torch.ones(images.shape[0], 1)) if self.with_scale else out


def trivial_model(task: str, train_root, input_hw, sigma=None) -> ConstantModel:
    """The task's trivial baseline, fitted on the training images only."""
    h, w = input_hw
    if task == "seg":
        logits = torch.zeros(29, h, w)
        logits[0] = 1.0  # always background
        return ConstantModel(logits)
    train = build_dataset(task, train_root, train=False, input_hw=input_hw, sigma=sigma)
    if task == "pose":  # mean pose: every labelled keypoint averaged in the (deterministic) crop frame
        from sapiens2.training.transforms.topdown import eval_pose_crop
        from sapiens2.tasks.pose.codec import encode_udp_heatmaps
        total, count = np.zeros((308, 2)), np.zeros(308)
        for p in train.people:
            rec = train.coco.images[p.image_id]
            m = eval_pose_crop(np.zeros((rec.height, rec.width, 3), np.uint8), p.bbox_xyxy,
                               train.input_wh).matrix.astype(np.float64)
            labelled = p.keypoints[:, 2] > 0
            total[labelled] += (p.keypoints[:, :2] @ m[:, :2].T + m[:, 2])[labelled]
            count[labelled] += 1
        mean = (total / np.maximum(count, 1)[:, None]).astype(np.float32)
        heatmaps, _ = encode_udp_heatmaps(mean, train.input_wh, (w // 4, h // 4), train.sigma,
                                          np.ones(308, np.float32))
        return ConstantModel(torch.from_numpy(heatmaps))
    values = []
    for i in range(len(train)):
        item = train[i]
        values.append(item[task].numpy().reshape(3, -1)[:, item["mask"].numpy().reshape(-1) > 0])
    mean = np.concatenate(values, 1).mean(1)
    if task == "normal":
        mean /= np.linalg.norm(mean)
    return ConstantModel(torch.from_numpy(mean)[:, None, None].expand(3, h, w), with_scale=task == "pointmap")


SMALL_SCALE_HEAD = '{"scale_conv_out_channels": [16], "scale_conv_kernel_sizes": [1]}'
# Two x2 stages, no extra convs: output at 1/4 size, upsampled bilinearly by the loss and the evaluator. With the
# tiny arch's default head (4 stages + 3 convs, each followed by a per-pixel RMSNorm) on a random backbone, the
# prediction collapses to the mean albedo within this budget; without those norms or with this head it learns.
SHALLOW_ALBEDO_HEAD = '{"upsample_channels": [32, 16], "conv_out_channels": [], "conv_kernel_sizes": []}'

# task: (config overrides, metric key, higher is better, required margin over the trivial baseline)
# margin: "ratio" r means trained >= r x baseline (higher is better) or trained <= r x baseline (lower is better).
LEARNING = {
    # unweighted CE: the official weights (background 0.1, small parts 10) keep the loss from halving this early
    "seg": ({"num_iters": 250, "loss.class_weight": "null"}, "mIoU", True, 1.4),
    # the official seg augmentations on (the other cases train on plain images, to learn within a small budget):
    # harder to fit, so a smaller margin (measured 1.27x the baseline's mIoU at 200 steps, 1.28x at 250, untrained
    # 0.08x); batch 4 and 200 steps keep it short
    "seg+augment": ({"num_iters": 200, "data.batch_size": 4, "loss.class_weight": "null", "data.augment": "true"},
                    "mIoU", True, 1.2),
    "pointmap": ({"num_iters": 150, "head": SMALL_SCALE_HEAD}, "dist_m", False, 0.85),
    # 128x96: at 64x48 a limb is ~3 px inside 16 px patches and nothing beyond the mean normal is learned;
    # no gradient term: from a random head it dominates the loss and pulls the output towards a smooth constant
    "normal": ({"num_iters": 250, "data.input_size": "[128,96]", "data.batch_size": 4, "optim.lr": 5e-3,
                "loss.grad_weight": 0}, "mean_deg", False, 0.96),
    # 128x96: at 64x48 (4x3 patches) 1000 steps only reach the mean pose's PCK + 10%; lr 2e-2 overshoots here.
    # Batch 4: PCK 1.15x the mean pose's (1.1x required, untrained 0.08x) in 0.65x the CPU time of batch 8 (which
    # reaches 1.19x in 400 steps, but only 1.05x in 250, the same time as batch 4's 400)
    "pose": ({"num_iters": 400, "data.input_size": "[128,96]", "data.batch_size": 4, "data.sigma": 2.0,
              "optim.lr": 5e-3}, "PCK@0.1", True, 1.1),
    # 300 steps: measured MAE 0.79x the mean albedo's (0.85x required), untrained 7.1x (250 steps: 0.82x, too close)
    "albedo": ({"num_iters": 300, "data.input_size": "[128,96]", "data.batch_size": 4, "optim.lr": 5e-3,
                "head": SHALLOW_ALBEDO_HEAD}, "mae", False, 0.85),
}


@pytest.mark.parametrize("case", list(LEARNING))
def test_learning_beats_the_trivial_baseline(case, humans, tmp_path):
    over, key, higher, margin = LEARNING[case]
    task = case.split("+")[0]
    train_root, held_out_root = humans
    sets = {"data.train": str(train_root), "data.val": str(held_out_root), "data.input_size": "[64,48]",
            "data.batch_size": 8, "data.num_workers": 0, "data.augment": "false", "optim.lr": 2e-2,
            "optim.warmup_iters": 5, "optim.layer_decay_rate": 1.0, "progress": "false", "output_dir": str(tmp_path),
            "save_every": 0, "eval_every": 0, "log_every": 1000, "device": "cpu", **over}
    cfg = load_config(task, "sapiens2_tiny", overrides=[f"{k}={v}" for k, v in sets.items()])
    result = Trainer(cfg).fit()
    # the first 5 steps against the last 10% (averaged: the loss of one batch of 4-8 images is noisy)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-(len(result.losses) // 10):])
    assert last < 0.5 * first, f"{case} loss {first:.4g} -> {last:.4g}"

    held_out = build_dataset(task, held_out_root, train=False, input_hw=cfg.data.input_size, sigma=cfg.data.sigma)
    trained = result.metrics[key]  # the trainer's final evaluation on the held-out folder
    base = evaluate(trivial_model(task, train_root, cfg.data.input_size, cfg.data.sigma), held_out)[key]
    torch.manual_seed(cfg.seed)  # the same initial weights, untrained
    untrained = evaluate(build_training_model(task, "sapiens2_tiny", cfg.data.input_size, cfg.head).eval(),
                         held_out)[key]
    report = (f"{case}: loss {first:.4g} -> {last:.4g}; trained {key}={trained:.4g}, trivial baseline {base:.4g}, "
              f"untrained {untrained:.4g}")
    if higher:
        assert trained > untrained and trained >= margin * base, report
    else:
        assert trained < untrained and trained <= margin * base, report
