"""Distillation students: quality against their teacher and against label-only training, and speed beside 0.1b.

    .venv/bin/python benchmarks/student.py [--train 160] [--unlabelled 320] [--held-out 40] [--teacher-steps 800]
                                           [--student-steps 300] [--threads 2] [--skip-quality] [--skip-speed]
                                           [--tasks pose,seg] [--workdir DIR]

Quality, on synthetic humans (``sapiens2.data.synth``, one person per 128x96 image; ground truth exists here):

1. a ``sapiens2_tiny`` teacher per task is trained on the labelled training set (``Trainer``, as
   tests/test_train_learning.py does: pose and seg at 128x96 input, ``--pose-size`` / ``--seg-size``);
2. the student arch (``sapiens2_student_pose`` / ``_seg``, at the teacher's input size so both see the same pixels)
   is distilled from it (``sapiens2 distill``'s path: ``TrainConfig.distill``) on *unlabelled* images from another
   generator seed (``distill.use_labels=false``: pose crops come from the person boxes, as a detector would give;
   seg: KL at T=2 plus the seg loss on the teacher's argmax, ``distill.hard_weight=1``; ``--distill-set`` adds
   overrides);
3. the same student is trained on the labels alone (``sapiens2 train``'s path) with the same steps and batch;
4. all three are evaluated on held-out images (a third seed): PCK@0.1 (pose) and mIoU (seg), and the ratio of each
   student's figure to the teacher's is printed, with each run's steps, samples and CPU / wall time.

The teacher gets more steps than the students: it stands for a large model trained long, the students' budget is
what is compared. ``--workdir`` keeps data and runs; a later call reuses data whose generator manifest matches and
finished runs whose ``config.yaml`` equals the one it would train (so ``--tasks pose`` and ``--tasks seg`` can run
as two processes, and a run killed half-way is redone).

Speed (``torch.inference_mode``, float32, best of ``--repeats``; rates per wall second and per CPU second of the
process, the latter being what one idle core gives; use ``--threads 1`` on a loaded machine, where two threads spin
against other processes): pose crops/s at 256x192 (batch 8) and seg
images/s at 512x384 (batch 4) of the students, beside the 0.1b teacher with the official heads at 1024x768 (random
weights; batch 1), in the same run. The load average is printed before and after: on a shared machine the speeds
are noisy.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def throughput(model, x, repeats: int) -> tuple[float, float]:
    """(items per wall second, items per CPU second of this process), best of ``repeats``. The second is what an
    idle machine gives per core: on a shared machine wall rates fall with the load, CPU rates much less."""
    model.eval()
    with torch.inference_mode():
        model(x)  # warm-up
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    return x.shape[0] / best, x.shape[0] / best_cpu


def speed(repeats: int) -> None:
    from sapiens2 import build_model
    torch.manual_seed(0)
    rows = []
    for task, arch, hw, batch in (("pose", "sapiens2_student_pose", (256, 192), 8),
                                  ("seg", "sapiens2_student_seg", (512, 384), 4),
                                  ("pose", "sapiens2_0.1b", (1024, 768), 1),
                                  ("seg", "sapiens2_0.1b", (1024, 768), 1)):
        m = build_model(task, arch, img_size=hw)
        params = sum(p.numel() for p in m.parameters()) / 1e6
        rate, per_cpu = throughput(m, torch.randn(batch, 3, *hw), repeats if "student" in arch else max(1, repeats // 2))
        unit = "crops/s" if task == "pose" else "images/s"
        rows.append((task, arch, f"{hw[0]}x{hw[1]}", batch, params, rate, unit))
        print(f"  {task:4s} {arch:22s} {hw[0]}x{hw[1]:<5d} batch {batch}  {params:7.2f} M params  "
              f"{rate:8.3g} {unit}  ({per_cpu:.3g} per CPU second)", flush=True)
    for task in ("pose", "seg"):
        s = next(r for r in rows if r[0] == task and "student" in r[1])
        t = next(r for r in rows if r[0] == task and "0.1b" in r[1])
        print(f"  {task}: student {s[5]:.3g} {s[6]} vs 0.1b teacher {t[5]:.3g} {t[6]} ({s[5] / t[5]:.0f}x)")


QUALITY = {  # task: (default input size (H, W), metric, teacher / student overrides, distilled-run overrides)
    "pose": ((128, 96), "PCK@0.1", {"data.sigma": 2.0, "optim.lr": 5e-3}, {}),
    # seg at 128x96 (the images' own size; at 64x48 the tiny teacher saw 4x3 patches and learnt little); KL at T=2
    # plus the seg loss (CE + Dice) on the teacher's argmax: the KL alone gave 63% of the teacher's mIoU, this 94%
    "seg": ((128, 96), "mIoU", {"loss.class_weight": "null", "optim.lr": 2e-2},
            {"distill.temperature": 2.0, "distill.hard_weight": 1.0}),
}


def _dataset(folder: Path, num: int, seed: int, common: dict) -> Path:
    """The synthetic set in ``folder``, reused (``--workdir``) when the generator's manifest says it is ``num``
    images of ``seed`` at the same settings (generation is deterministic in those)."""
    import json
    import shutil

    from sapiens2.data.synth import write_dataset
    manifest = folder / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if all(m.get(k) == v for k, v in {"num": num, "seed": seed, **common}.items()):
            return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_dataset(folder, num=num, seed=seed, progress=False, **common)
    return folder


def quality(args, root: Path) -> None:
    from sapiens2.evaluation.runner import evaluate
    from sapiens2.checkpoints import load_model
    from sapiens2.training.config import load_config
    from sapiens2.training.datasets import build_dataset
    from sapiens2.training.trainer import Trainer

    t0 = time.perf_counter()
    common = dict(height=128, width=96, max_people=1)
    train = _dataset(root / "train", args.train, 0, common)
    unlabelled = _dataset(root / "unlabelled", args.unlabelled, 2, common)
    held_out = _dataset(root / "held_out", args.held_out, 1, common)
    print(f"  data: {args.train} labelled, {args.unlabelled} unlabelled, {args.held_out} held-out images "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    def fit(task, model, name, data, steps, extra):
        """(checkpoint, process CPU seconds, wall seconds). A finished run already in --workdir whose config.yaml
        (written by the trainer) equals this one's is reused; its times are those recorded when it ran (None if
        it was not run by this script)."""
        import json

        import yaml
        from sapiens2.training.config import config_to_dict
        over = QUALITY[task][2]
        hw = args.sizes[task]
        sets = {"data.train": str(data), "data.input_size": f"[{hw[0]},{hw[1]}]", "data.batch_size": 8,
                "data.num_workers": 0, "data.augment": "false", "optim.warmup_iters": 5,
                "optim.layer_decay_rate": 1.0, "progress": "false", "output_dir": str(root / name), "save_every": 0,
                "eval_every": 0, "log_every": 1000, "device": "cpu", "num_iters": steps, **over, **extra}
        config = load_config(task, model, overrides=[f"{k}={v}" for k, v in sets.items()])
        run = root / name
        ckpt, saved, times = run / "model.safetensors", run / "config.yaml", run / "benchmark_student.json"
        if ckpt.is_file() and saved.is_file() and yaml.safe_load(saved.read_text()) == yaml.safe_load(
                yaml.safe_dump(config_to_dict(config), sort_keys=False)):
            done = json.loads(times.read_text()) if times.is_file() else {}
            print(f"  reusing {run} (same config)", flush=True)
            return ckpt, done.get("cpu_s"), done.get("wall_s")
        t, c = time.perf_counter(), time.process_time()
        Trainer(config, overwrite=True).fit()
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        times.write_text(json.dumps({"cpu_s": cpu, "wall_s": wall}))
        return ckpt, cpu, wall

    def secs(cpu, wall):
        return "times not recorded" if cpu is None else f"{cpu:.0f} CPU-s / {wall:.0f} s wall"

    for task in args.tasks.split(","):
        key = QUALITY[task][1]
        hw = args.sizes[task]
        held = build_dataset(task, held_out, train=False, input_hw=hw, sigma=QUALITY[task][2].get("data.sigma"))
        teacher, tc, tt = fit(task, "sapiens2_tiny", f"teacher_{task}", train, args.teacher_steps, {})
        student = f"sapiens2_student_{task}"
        distilled, dc, dt = fit(task, student, f"distilled_{task}", unlabelled, args.student_steps,
                                {"distill.teacher": str(teacher), "distill.use_labels": "false", **QUALITY[task][3],
                                 **dict(kv.split("=", 1) for kv in args.distill_set)})
        labels, lc, lt = fit(task, student, f"labels_{task}", train, args.student_steps, {})
        scores = {name: evaluate(load_model(path), held)[key]
                  for name, path in (("teacher", teacher), ("distilled", distilled), ("labels only", labels))}
        n = args.student_steps * 8
        print(f"  {task}: held-out {key} on {args.held_out} images (teacher sapiens2_tiny: {args.teacher_steps} steps "
              f"on {args.train} labelled images, {secs(tc, tt)}; students: {args.student_steps} steps of batch 8 = "
              f"{n} samples, distilled on {args.unlabelled} unlabelled images {secs(dc, dt)}, labels only on "
              f"{args.train} labelled images {secs(lc, lt)})")
        for name, value in scores.items():
            ratio = value / scores["teacher"] if scores["teacher"] else float("nan")
            print(f"    {name:12s} {value:8.3f}   {100 * ratio:5.1f}% of the teacher", flush=True)
        print(f"    distilled vs labels only: {scores['distilled'] - scores['labels only']:+.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=160)
    p.add_argument("--unlabelled", type=int, default=320)
    p.add_argument("--held-out", type=int, default=40)
    p.add_argument("--teacher-steps", type=int, default=800)
    p.add_argument("--student-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--tasks", default="pose,seg", help="quality: pose, seg or both (run them as two processes "
                                                        "to use two cores)")
    p.add_argument("--workdir", default=None, help="keep data, teachers and students here and reuse the data and "
                                                    "teachers of an earlier run with the same settings")
    p.add_argument("--pose-size", default=None, help="quality: pose input HxW of teacher and students")
    p.add_argument("--seg-size", default=None, help="quality: seg input HxW of teacher and students")
    p.add_argument("--distill-set", action="append", default=[], metavar="KEY=VALUE",
                   help="quality: a config override of the distilled runs only (e.g. distill.temperature=2)")
    args = p.parse_args()
    args.sizes = {task: tuple(int(v) for v in given.lower().split("x")) if given else QUALITY[task][0]
                  for task, given in (("pose", args.pose_size), ("seg", args.seg_size))}
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()}; torch threads {torch.get_num_threads()}", flush=True)
    if not args.skip_speed:
        print("speed (inference, float32, CPU):")
        speed(args.repeats)
    if not args.skip_quality:
        print("quality (synthetic humans, held-out images):")
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            quality(args, Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="sapiens2_student_") as tmp:
                quality(args, Path(tmp))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
