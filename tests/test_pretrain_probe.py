"""Linear-probe evaluation of frozen patch features (``sapiens2.training.pretrain.probe``): the probe itself
(always on, fast), and the usefulness check of pretraining (a short run on synthetic humans vs a randomly
initialised backbone on the 29-class part map; opt-in, see the skip reason)."""
from __future__ import annotations

import logging
import os
import time

import cv2
import pytest
import torch
import torch.nn.functional as F

from sapiens2 import build_backbone
from sapiens2.training.pretrain import ObjectiveConfig, PretrainConfig, ViewSpec, pretrain
from sapiens2.training.pretrain.config import pretrain_optim_defaults
from sapiens2.training.pretrain.probe import (extract_patch_features, fit_linear_probe, linear_probe_miou,
                                              score_probe, synthetic_part_set)
from sapiens2.training.pretrain.trainer import build_pretrain_model

SIZE = (128, 96)
log = logging.getLogger(__name__)


def _onehot_grid(labels: torch.Tensor, num_classes: int, cell: int) -> torch.Tensor:
    onehot = F.one_hot(labels.clamp_max(num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, cell)  # (N, K, h, w): the class fractions of each cell


def test_probe_separates_informative_from_uninformative_features():
    torch.manual_seed(0)
    labels = torch.zeros(12, 32, 24, dtype=torch.long)
    labels[:, 8:24, 6:18] = 1  # a box of class 1 on class 0, with a class-2 stripe inside
    labels[:, 12:16, 6:18] = 2
    shift = torch.randint(-4, 5, (12,))
    labels = torch.stack([lab.roll(int(s), dims=1) for lab, s in zip(labels, shift)])
    informative = _onehot_grid(labels, 3, 4) + 0.05 * torch.randn(12, 3, 8, 6)
    noise = torch.randn(12, 3, 8, 6)
    tr, te = slice(0, 8), slice(8, 12)
    good = score_probe(fit_linear_probe(informative[tr], labels[tr], 3), informative[te], labels[te], 3, 255)
    bad = score_probe(fit_linear_probe(noise[tr], labels[tr], 3), noise[te], labels[te], 3, 255)
    assert good["mIoU"] > 60, good["mIoU"]
    assert bad["mIoU"] < good["mIoU"] - 25, (bad["mIoU"], good["mIoU"])
    # ignored pixels take no part in the fit or the score
    holey = labels.clone()
    holey[:, :2] = 255
    assert fit_linear_probe(informative[tr], holey[tr], 3).classifier.weight.abs().sum() > 0


def test_probe_inputs_are_checked_and_backbone_mode_restored():
    bb = build_backbone("tiny", img_size=(32, 32), rope_dtype="fp32")
    bb.train()
    feats = extract_patch_features(bb, torch.randn(3, 3, 32, 32), batch_size=2)
    assert feats.shape == (3, 64, 2, 2) and bb.training
    with pytest.raises(ValueError, match="normalised images"):
        extract_patch_features(bb, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="same N"):
        fit_linear_probe(feats, torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be in"):
        fit_linear_probe(feats, torch.full((3, 8, 8), 40, dtype=torch.long))


def test_synthetic_part_set_is_person_centred_and_deterministic():
    x, y, rgb = synthetic_part_set(5, 3, size=SIZE, label_stride=2)
    assert x.shape == (3, 3, *SIZE) and y.shape == (3, SIZE[0] // 2, SIZE[1] // 2) and rgb.shape == (3, *SIZE, 3)
    fg = (y != 0) & (y != 255)
    rows = fg.any(2).float().mean(1)  # the person spans most of the crop's height
    assert (rows > 0.6).all(), rows
    x2, y2, _ = synthetic_part_set(5, 3, size=SIZE, label_stride=2)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def probe_pretrain_config(data, out, steps: int) -> PretrainConfig:
    """Small-scale pretraining on a CPU (~0.37 s a step on one core): tiny arch at 128x96 person crops, 1024
    prototypes, fast EMA teacher, LayerScale from 1, fp32 RoPE (bf16 elementwise maths is many times slower on CPU)."""
    optim = pretrain_optim_defaults()
    optim.lr, optim.warmup_iters = 2e-3, 20
    return PretrainConfig(
        data=str(data), arch="tiny", output_dir=str(out), num_steps=steps, batch_size=16, num_workers=0,
        precision="fp32", device="cpu", rope_dtype="fp32", layerscale_init=1.0, log_every=10, save_every=0,
        progress=False, collapse_grace_steps=10 ** 6, views=ViewSpec(global_size=SIZE),
        objective=ObjectiveConfig(decoder_dim=64, decoder_depth=2, decoder_heads=4, head_out_dim=1024,
                                  head_hidden_dim=256, head_bottleneck_dim=64, momentum_base=0.99,
                                  teacher_temp_warmup_steps=0, teacher_temp=0.04),
        optim=optim)


@pytest.mark.skipif(os.environ.get("SAPIENS2_PRETRAIN_PROBE") != "1",
                    reason="opt-in, ~31 min on one CPU core, and borderline: the margin needs thousands of steps "
                           "(class-balanced probe mIoU, random 3.9-4.16: pretrained 4.3 at 120 steps, 4.66 at 600, "
                           "5.12 at 2400, 5.20 at 4800 = the default here, passes; with seed 1 5.03, just misses; a "
                           "patch-grid oracle: 26.7); "
                           "run with SAPIENS2_PRETRAIN_PROBE=1 [SAPIENS2_PRETRAIN_PROBE_STEPS=N]")
@pytest.mark.usefixtures("one_torch_thread")  # tiny ops: one thread is several times faster than two here
def test_linear_probe_pretrained_beats_random(tmp_path):
    steps = int(os.environ.get("SAPIENS2_PRETRAIN_PROBE_STEPS", "4800"))
    tic = time.perf_counter()
    train_x, train_y, train_rgb = synthetic_part_set(101, 240, SIZE)
    test_x, test_y, _ = synthetic_part_set(202, 96, SIZE)  # held out: never seen by pretraining or the probe
    root = tmp_path / "imgs"
    root.mkdir()
    for i, img in enumerate(train_rgb):
        cv2.imwrite(str(root / f"{i:04d}.png"), img[..., ::-1])
    cfg = probe_pretrain_config(root, tmp_path / "run", steps)
    result = pretrain(cfg, keep_model=True)
    pretrained = linear_probe_miou(result.model.teacher.backbone, train_x, train_y, test_x, test_y,
                                   class_balance=0.5)
    torch.manual_seed(cfg.seed)  # the default initialisation a user gets from build_backbone
    default = build_backbone("tiny", img_size=SIZE, rope_dtype="fp32")
    random_default = linear_probe_miou(default, train_x, train_y, test_x, test_y, class_balance=0.5)
    torch.manual_seed(cfg.seed)  # the pretraining run's exact starting point (LayerScale 1)
    start = build_pretrain_model(cfg, torch.device("cpu")).teacher.backbone
    random_start = linear_probe_miou(start, train_x, train_y, test_x, test_y, class_balance=0.5)
    log.warning("part-map probe mIoU: pretrained %.2f, random (default init) %.2f, random (run start) %.2f; "
                "%d steps, %.0f s", pretrained.miou, random_default.miou, random_start.miou, steps,
                time.perf_counter() - tic)
    assert pretrained.miou > max(random_default.miou, random_start.miou) + 1.0
