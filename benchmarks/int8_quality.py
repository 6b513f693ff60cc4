"""The task metric of ONNX Runtime int8 (dynamic and static) against float32, on models trained on synthetic humans.

    PYTHONPATH=src .venv/bin/python benchmarks/int8_quality.py [--tasks pose,seg] [--arch sapiens2_tiny] \\
        [--threads 2] [-o docs/benchmarks/int8-quality]

Random weights say nothing about int8 accuracy (random LayerScale is 1e-4: the blocks barely move the tokens), so
each task is first trained on synthetic humans with the recipe of ``tests/test_train_learning.py`` (320 training
images, 40 held out from another generator seed, 128x96 renders; seg 250 steps at 64x48, pose 400 steps at 128x96),
then exported once to float32 ONNX, quantised from that file (:func:`sapiens2.export.exporter.quantize_exported`:
dynamic, and static calibrated on 32 training images through the task's own preprocessing), and every variant is
scored by the same ``evaluate`` on the held-out images: mIoU / pixel accuracy for seg, PCK@0.1 / PCK@0.05 for pose.
Besides the metric it reports how far each variant's outputs are from torch float32 on the held-out batch: seg the
share of pixels whose argmax label agrees, pose the mean distance of the decoded keypoints in input pixels, and
the relative L2 error of the raw outputs. Writes ``int8_quality.json`` and ``int8_quality.md`` to ``-o``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RECIPES = {  # as tests/test_train_learning.py LEARNING (the seg and pose cases)
    "seg": {"num_iters": 250, "loss.class_weight": "null"},
    "pose": {"num_iters": 400, "data.input_size": "[128,96]", "data.sigma": 2.0, "optim.lr": 5e-3},
}
METRICS = {"seg": ("mIoU", "aAcc"), "pose": ("PCK@0.1", "PCK@0.05")}


def train(task: str, arch: str, train_root: Path, held_out_root: Path, folder: Path, iters: int | None):
    from sapiens2.training.config import load_config
    from sapiens2.training.trainer import Trainer

    sets = {"data.train": str(train_root), "data.val": str(held_out_root), "data.input_size": "[64,48]",
            "data.batch_size": 8, "data.num_workers": 0, "data.augment": "false", "optim.lr": 2e-2,
            "optim.warmup_iters": 5, "optim.layer_decay_rate": 1.0, "progress": "false", "output_dir": str(folder),
            "save_every": 0, "eval_every": 0, "log_every": 1000, "device": "cpu", **RECIPES[task]}
    if iters:
        sets["num_iters"] = iters
    cfg = load_config(task, arch, overrides=[f"{k}={v}" for k, v in sets.items()])
    result = Trainer(cfg).fit()
    return cfg, result


def held_out_outputs(model, dataset, batch: int = 8) -> torch.Tensor:
    from sapiens2.data.collate import collate

    outs = []
    for start in range(0, len(dataset), batch):
        images = collate([dataset[i] for i in range(start, min(start + batch, len(dataset)))])["image"]
        with torch.no_grad():
            out = model(images)
        outs.append((out[0] if isinstance(out, tuple) else out).float())
    return torch.cat(outs)


def agreement(task: str, out: torch.Tensor, ref: torch.Tensor) -> dict:
    rel = float((out.double() - ref.double()).norm() / ref.double().norm())
    if task == "seg":
        return {"rel_error": rel, "label_agreement_%": 100 * float((out.argmax(1) == ref.argmax(1)).float().mean())}
    from sapiens2.tasks.pose.codec import decode_udp_heatmaps

    h, w = out.shape[-2:]
    dist = []
    for a, b in zip(out.numpy(), ref.numpy()):
        ka, _ = decode_udp_heatmaps(a, (w * 4, h * 4))
        kb, _ = decode_udp_heatmaps(b, (w * 4, h * 4))
        dist.append(np.linalg.norm(ka - kb, axis=-1))
    dist = np.stack(dist)
    return {"rel_error": rel, "keypoint_px_mean": float(dist.mean()), "keypoint_px_p95": float(np.percentile(dist, 95))}


def main() -> int:
    from sapiens2.checkpoints import load_model
    from sapiens2.data.synth import write_dataset
    from sapiens2.evaluation.runner import evaluate
    from sapiens2.export import export_model, load_exported
    from sapiens2.export.exporter import quantize_exported
    from sapiens2.training.datasets import build_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="seg,pose")
    p.add_argument("--arch", default="sapiens2_tiny")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--iters", type=int, default=None, help="training steps (default: the learning test's)")
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("-o", "--output", default=None, help="folder for int8_quality.json / .md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="sapiens2-int8-quality-"))
    train_root = write_dataset(root / "train", num=320, seed=0, height=128, width=96, max_people=1, progress=False)
    held_root = write_dataset(root / "held_out", num=40, seed=1, height=128, width=96, max_people=1, progress=False)
    rows, sizes = [], {}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        t0 = time.perf_counter()
        cfg, result = train(task, args.arch, train_root, held_root, root / f"run_{task}", args.iters)
        print(f"{task}: trained {cfg.num_iters} steps in {time.perf_counter() - t0:.0f} s "
              f"(loss {np.mean(result.losses[:5]):.4g} -> {np.mean(result.losses[-10:]):.4g})", flush=True)
        hw = tuple(cfg.data.input_size)
        model = load_model(root / f"run_{task}" / "model.safetensors", task=task, img_size=hw).eval()
        files = {"onnx float32": root / f"{task}_fp32.onnx", "onnx int8 dynamic": root / f"{task}_dyn.onnx",
                 "onnx int8 static": root / f"{task}_static.onnx"}
        t0 = time.perf_counter()
        export_model(model, files["onnx float32"], format="onnx", input_size=hw)
        t_export = time.perf_counter() - t0
        quantize_exported(files["onnx float32"], files["onnx int8 dynamic"])
        quantize_exported(files["onnx float32"], files["onnx int8 static"], calibrate=train_root / "images",
                          max_calibration_images=args.calibration_images)
        print(f"{task}: exported in {t_export:.0f} s, quantised", flush=True)
        held_out = build_dataset(task, held_root, train=False, input_hw=hw, sigma=cfg.data.sigma)
        runners = {"torch float32": model, **{k: load_exported(v, task=task, threads=args.threads)
                                              for k, v in files.items()}}
        ref = held_out_outputs(model, held_out)
        base = None
        for name, runner in runners.items():
            metrics = evaluate(runner, held_out, device="cpu")
            values = {k: float(metrics[k]) for k in METRICS[task]}
            base = base or values
            row = {"task": task, "variant": name, "input": f"{hw[0]}x{hw[1]}", **values,
                   **{f"drop {k}": base[k] - values[k] for k in METRICS[task]},
                   **agreement(task, held_out_outputs(runner, held_out), ref)}
            if name in files:
                row["MiB"] = files[name].stat().st_size / 2**20
                sizes[f"{task} {name}"] = files[name].stat().st_size
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"int8 quality on synthetic-trained {args.arch} ({os.cpu_count()} CPUs, load "
             f"{' '.join(f'{v:.1f}' for v in load_before)} -> {' '.join(f'{v:.1f}' for v in os.getloadavg())}, "
             f"{time.time() - started:.0f} s)", "",
             "| task | variant | metric | value | drop vs torch fp32 | 2nd metric | value | agreement with fp32 | "
             "rel. L2 error | MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m1, m2 = METRICS[r["task"]]
        agree = (f"{r['label_agreement_%']:.2f} % labels" if r["task"] == "seg"
                 else f"{r['keypoint_px_mean']:.3f} px mean, {r['keypoint_px_p95']:.3f} px p95")
        lines.append(f"| {r['task']} | {r['variant']} | {m1} | {r[m1]:.2f} | {r['drop ' + m1]:+.2f} | {m2} | "
                     f"{r[m2]:.2f} | {agree} | {r['rel_error']:.2e} | "
                     f"{'' if 'MiB' not in r else format(r['MiB'], '.2f')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "int8_quality.json").write_text(json.dumps({"rows": rows, "sizes_bytes": sizes}, indent=1))
        (out / "int8_quality.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
