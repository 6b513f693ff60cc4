"""Distillation (training/distill, ``sapiens2 distill``): the students, learning from a teacher on unlabelled images,
exact resume, precomputed targets, the teacher-to-student grid alignment of pose heatmaps, and the student checkpoint
through load_model, predict and export.

Small and CPU-only: a ``sapiens2_tiny`` seg teacher briefly trained on synthetic humans at 64x48, students at the
same size (patch 16: a 4x3 grid), a few dozen steps.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.checkpoints import load_model
from sapiens2.cli.main import main as cli_main
from sapiens2.data.synth import write_dataset
from sapiens2.evaluation.runner import evaluate
from sapiens2.training.config import load_config
from sapiens2.training.datasets import build_dataset
from sapiens2.training.trainer import Trainer, build_training_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HW = (64, 48)
BASE = {"data.input_size": f"[{HW[0]},{HW[1]}]", "data.batch_size": 8, "data.num_workers": 0,
        "data.augment": "false", "optim.warmup_iters": 3, "optim.layer_decay_rate": 1.0, "progress": "false",
        "save_every": 0, "eval_every": 0, "log_every": 1000, "device": "cpu", "loss.class_weight": "null"}


def config(task: str, model: str, out, **over):
    sets = {**BASE, "output_dir": str(out), **over}
    return load_config(task, model, overrides=[f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Labelled training images (seed 0), unlabelled ones (seed 2), held-out ones (seed 1), and a seg teacher."""
    root = tmp_path_factory.mktemp("distill")
    threads = torch.get_num_threads()  # a module fixture runs before one_torch_thread
    torch.set_num_threads(1)
    kw = dict(height=HW[0], width=HW[1], max_people=1, progress=False)
    train = write_dataset(root / "train", num=32, seed=0, **kw)
    unlabelled = write_dataset(root / "unlabelled", num=32, seed=2, **kw)
    held_out = write_dataset(root / "held_out", num=8, seed=1, **kw)
    Trainer(config("seg", "sapiens2_tiny", root / "teacher", **{"data.train": str(train), "num_iters": 60,
                                                                 "optim.lr": 2e-2})).fit()
    torch.set_num_threads(threads)
    return {"root": root, "train": train, "unlabelled": unlabelled, "held_out": held_out,
            "teacher": root / "teacher" / "model.safetensors"}


def test_student_archs_build_at_their_sizes():
    pose = sapiens2.build_model("pose", "sapiens2_student_pose")
    seg = sapiens2.build_model("seg", "sapiens2_student_seg")
    assert pose.img_size == (256, 192) and seg.img_size == (512, 384)
    with torch.inference_mode():
        assert pose(torch.zeros(1, 3, 256, 192)).shape == (1, 308, 64, 48)
        assert seg(torch.zeros(1, 3, 128, 96)).shape == (1, 29, 64, 48)  # seg student: logits at half resolution
    # small: well under a tenth of the 0.1b backbone
    assert sum(p.numel() for p in pose.parameters()) < 3e6 and sum(p.numel() for p in seg.parameters()) < 3e6


def test_distilled_student_learns_from_unlabelled_images(world, tmp_path):
    cfg = config("seg", "sapiens2_student_seg", tmp_path / "run",
                 **{"data.train": str(world["unlabelled"]), "data.val": str(world["held_out"]), "num_iters": 60,
                    "optim.lr": 1e-2, "distill.teacher": str(world["teacher"]), "distill.use_labels": "false"})
    result = Trainer(cfg).fit()
    assert set(result.terms[0]) == {"loss_kd"}  # no ground truth used
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    assert last < 0.6 * first, f"distillation loss {first:.4g} -> {last:.4g}"
    held = build_dataset("seg", world["held_out"], train=False, input_hw=HW)
    torch.manual_seed(cfg.seed)  # the same initial weights, untrained
    untrained = evaluate(build_training_model("seg", "sapiens2_student_seg", HW).eval(), held)["mIoU"]
    student = load_model(tmp_path / "run" / "model.safetensors")
    assert student.backbone.arch.name == "sapiens2_student_seg" and student.img_size == HW
    trained = evaluate(student, held)["mIoU"]
    assert trained == pytest.approx(result.metrics["mIoU"], abs=1e-6)
    assert trained > 1.5 * untrained + 1.0, f"mIoU (%) untrained {untrained:.3g} -> distilled {trained:.3g}"


def test_ground_truth_mixes_in_where_present(world, tmp_path):
    cfg = config("seg", "sapiens2_student_seg", tmp_path / "run",
                 **{"data.train": str(world["train"]), "num_iters": 1, "distill.teacher": str(world["teacher"]),
                    "distill.gt_weight": 0.5})
    terms = Trainer(cfg).fit().terms[0]
    assert set(terms) == {"loss_kd", "loss_ce", "loss_dice"}


def test_distill_resume_continues_exactly(world, tmp_path):
    over = {"data.train": str(world["unlabelled"]), "num_iters": 4, "distill.teacher": str(world["teacher"]),
            "distill.use_labels": "false", "optim.lr": 1e-2}
    full = Trainer(config("seg", "sapiens2_student_seg", tmp_path / "a", **over)).fit().losses
    Trainer(config("seg", "sapiens2_student_seg", tmp_path / "b", **over), stop_after=2).fit()
    rest = Trainer(config("seg", "sapiens2_student_seg", tmp_path / "b", **over), resume=True).fit()
    assert rest.start_step == 2
    assert rest.losses == pytest.approx(full[2:], rel=1e-5)


def test_precomputed_targets_match_the_teacher_on_the_fly(world, tmp_path, capsys):
    targets = tmp_path / "targets"
    assert cli_main(["distill", "--teacher", f"seg={world['teacher']}", "--data", str(world["held_out"]),
                     "--write-targets", str(targets), "--device", "cpu", "--no-progress"]) == 0
    manifest = json.loads((targets / "seg" / "manifest.json").read_text())
    assert manifest["count"] == 8 and manifest["teacher_input_size"] == list(HW)
    assert len(list((targets / "seg").glob("*.npy"))) == 8
    over = {"data.train": str(world["held_out"]), "num_iters": 1, "distill.use_labels": "false",
            "distill.flip_prob": 0.0}
    live = Trainer(config("seg", "sapiens2_student_seg", tmp_path / "live",
                          **{**over, "distill.teacher": str(world["teacher"])})).fit().losses[0]
    stored = Trainer(config("seg", "sapiens2_student_seg", tmp_path / "stored",
                            **{**over, "distill.targets": str(targets)})).fit().losses[0]
    assert stored == pytest.approx(live, rel=2e-3)  # float16 storage of the logits


def test_teacher_heatmaps_land_on_the_student_grid_udp_aligned():
    """A teacher's heatmaps at 256x192 (64x48 maps) resampled to a 128x96 student's 32x24 grid decode where the
    student's own encoding of the same keypoints decodes: UDP maps corners to corners, so half-pixel resizing (the
    old path, kept here as the counter-example) shifts every keypoint by ~0.6 student pixels."""
    import torch.nn.functional as F

    from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps
    from sapiens2.training.distill.resample import resample
    rng = np.random.default_rng(0)
    kp = np.stack([rng.uniform(4, 187, 100), rng.uniform(4, 251, 100)], 1).astype(np.float32)
    teacher, _ = encode_udp_heatmaps(kp, (192, 256), (48, 64), sigma=4.0)
    student_kp = kp * np.array([95 / 191, 127 / 255], np.float32)  # the same points in the 128x96 crop (UDP warp)
    own, _ = encode_udp_heatmaps(student_kp, (96, 128), (24, 32), sigma=2.0)
    reference, _ = decode_udp_heatmaps(own, (96, 128))
    soft = torch.from_numpy(teacher)[None]
    aligned, _ = decode_udp_heatmaps(resample(soft, (32, 24), align_corners=True)[0].numpy(), (96, 128))
    half_pixel, _ = decode_udp_heatmaps(F.interpolate(soft, size=(32, 24), mode="bilinear", align_corners=False,
                                                      antialias=True)[0].numpy(), (96, 128))
    # DARK decoding of a resampled Gaussian vs an exact one differs by a few hundredths of a pixel; the half-pixel
    # shift is (input scale) x 0.5 heatmap pixel at the edges, ~0.6 px on average here
    assert np.abs(aligned - reference).mean() < 0.1
    assert np.abs(half_pixel - reference).mean() > 0.4
    # the student's crop: a corner-aligned resize of the teacher's crop is the box warped at the student's size
    ramp = torch.arange(256.0).view(1, 1, 256, 1).expand(1, 1, 256, 192).contiguous()
    down = resample(ramp, (128, 96), align_corners=True)[0, 0, :, 0]
    np.testing.assert_allclose(down[2:-2].numpy(), (np.arange(128) * 255 / 127)[2:-2], atol=1e-3)


def test_student_checkpoint_through_distill_predict_and_export_cli(world, tmp_path):
    run = tmp_path / "run"
    assert cli_main(["distill", "--teacher", f"seg={world['teacher']}", "--data", str(world["unlabelled"]),
                     "--unlabelled", "--input-size", "64x48", "--steps", "2", "--batch-size", "4", "--device", "cpu",
                     "--set", "data.num_workers=0", "--no-progress", "-o", str(run)]) == 0
    ckpt = run / "seg" / "model.safetensors"
    model = load_model(ckpt)
    assert (model.task, model.backbone.arch.name, model.img_size) == ("seg", "sapiens2_student_seg", HW)
    image = sorted((world["held_out"] / "images").iterdir())[0]
    out = tmp_path / "pred"
    assert cli_main(["predict", "--task", "seg", "--checkpoint", f"seg={ckpt}", "--device", "cpu", "--no-progress",
                     str(image), "-o", str(out)]) == 0
    import cv2
    mask = cv2.imread(str(out / f"{image.stem}.seg.png"), cv2.IMREAD_UNCHANGED)
    expected = sapiens2.Predictor(["seg"], model={"seg": str(ckpt)}, device="cpu").predict(str(image)).seg.mask
    np.testing.assert_array_equal(mask, expected)
    # export: torch.export (no ONNX Runtime needed; ONNX takes the same path in tests/test_export.py)
    from sapiens2.export import load_exported
    pt2 = tmp_path / "student.pt2"
    assert cli_main(["export", "--task", "seg", "--checkpoint", str(ckpt), "--format", "torch-export",
                     "--batch", "2", "-o", str(pt2)]) == 0
    exported = load_exported(pt2, task="seg", input_size=HW)
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x)
    got = exported(x)
    assert got.shape == want.shape == (2, 29, HW[0] // 2, HW[1] // 2)
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_distill_cli_refuses_bad_teacher_spec(tmp_path, capsys):
    assert cli_main(["distill", "--teacher", "normal=x.safetensors", "--data", str(tmp_path), "-o",
                     str(tmp_path / "o")]) == 2
    assert "distillation covers pose, seg" in capsys.readouterr().err



def test_seg_hard_label_term_is_the_task_loss_on_the_teacher_argmax():
    from sapiens2.training.distill.config import DistillConfig
    from sapiens2.training.distill.loss import DistillLoss
    from sapiens2.training.losses import build_task_loss

    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 29, 8, 6, generator=g)
    task_loss = build_task_loss("seg")
    # the student equal to its teacher: nothing left to match in the KL; the hard terms are the seg loss's (CE and
    # Dice) on the teacher's argmax, named apart from ground truth's
    total, terms = DistillLoss("seg", task_loss, DistillConfig(temperature=2.0, hard_weight=0.5))(
        teacher, {"soft": teacher})
    _, expected = task_loss(teacher, {"seg": teacher.argmax(1)})
    assert float(terms["loss_kd"]) == pytest.approx(0.0, abs=1e-6)
    assert set(terms) == {"loss_kd"} | {f"{k}_teacher" for k in expected} and len(expected) >= 2
    for k, v in expected.items():
        assert float(terms[f"{k}_teacher"]) == pytest.approx(0.5 * float(v), rel=1e-5)
    assert float(total) == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-6) and float(total) > 0.1
    _, off = DistillLoss("seg", task_loss, DistillConfig(temperature=2.0))(teacher, {"soft": teacher})
    assert set(off) == {"loss_kd"}  # hard_weight 0 (the default): the KL alone
