"""Does pretraining teach the backbone about people? Part-map linear probe: pretrained vs randomly initialised.

    .venv/bin/python benchmarks/probe.py                       # tiny arch, 600 steps on CPU (several minutes)
    .venv/bin/python benchmarks/probe.py --steps 3000 --device cuda

Pretrains on person-centred synthetic humans (128x96 crops), then fits the same linear probe (frozen patch
features -> 1x1 classifier, logits bilinearly upsampled, class-balanced cross-entropy, L-BFGS) on the features of
(a) the pretrained teacher backbone, (b) the default initialisation of ``build_backbone`` and (c) the run's own
starting point, and prints the held-out 29-class mIoU of each and the ratio pretrained / best random.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch

from sapiens2 import build_backbone
from sapiens2.training.pretrain import ObjectiveConfig, PretrainConfig, ViewSpec, pretrain
from sapiens2.training.pretrain.config import pretrain_optim_defaults
from sapiens2.training.pretrain.probe import linear_probe_miou, synthetic_part_set
from sapiens2.training.pretrain.trainer import build_pretrain_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-images", type=int, default=240)
    p.add_argument("--test-images", type=int, default=96)
    p.add_argument("--size", type=int, nargs=2, default=(128, 96), metavar=("H", "W"))
    p.add_argument("--class-balance", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (tiny ops: 1 is often fastest)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(args.size)

    tic = time.perf_counter()
    train_x, train_y, train_rgb = synthetic_part_set(101, args.train_images, size)
    test_x, test_y, _ = synthetic_part_set(202, args.test_images, size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        for i, img in enumerate(train_rgb):
            cv2.imwrite(str(root / f"{i:04d}.png"), img[..., ::-1])
        optim = pretrain_optim_defaults()
        optim.lr, optim.warmup_iters = args.lr, max(1, args.steps // 10)
        cfg = PretrainConfig(
            data=str(root), arch="tiny", output_dir=str(Path(tmp) / "run"), num_steps=args.steps,
            batch_size=args.batch, num_workers=0, precision="fp32", device=args.device, rope_dtype="fp32",
            layerscale_init=1.0, log_every=10, save_every=0, progress=True, collapse_grace_steps=10 ** 6,
            views=ViewSpec(global_size=size),
            objective=ObjectiveConfig(decoder_dim=64, decoder_depth=2, decoder_heads=4, head_out_dim=1024,
                                      head_hidden_dim=256, head_bottleneck_dim=64, momentum_base=0.99,
                                      teacher_temp_warmup_steps=0, teacher_temp=0.04),
            optim=optim)
        t_pre = time.perf_counter()
        result = pretrain(cfg, keep_model=True)
        t_pre = time.perf_counter() - t_pre
    device = torch.device(args.device)
    torch.manual_seed(cfg.seed)
    default = build_backbone("tiny", img_size=size, rope_dtype="fp32", device=device)
    torch.manual_seed(cfg.seed)
    start = build_pretrain_model(cfg, device).teacher.backbone
    figures = {}
    for name, backbone in (("pretrained", result.model.teacher.backbone), ("random (default init)", default),
                           ("random (run start)", start)):
        r = linear_probe_miou(backbone, train_x, train_y, test_x, test_y, class_balance=args.class_balance)
        figures[name] = r.miou
        print(f"{name:24s} test mIoU {r.miou:6.2f}  (train {r.train_miou:6.2f}, aAcc {r.metrics['aAcc']:5.1f})")
    best_random = max(figures["random (default init)"], figures["random (run start)"])
    print(f"pretrained / best random: {figures['pretrained'] / best_random:.3f}  "
          f"({args.steps} steps in {t_pre:.0f} s, total {time.perf_counter() - tic:.0f} s; shared-CPU timings are noisy)")


if __name__ == "__main__":
    main()
