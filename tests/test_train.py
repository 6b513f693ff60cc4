"""Trainer: config, optimiser, checkpoints in the official layout, exact resume, CLI (learning: test_train_learning.py)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import sapiens2
from sapiens2.data.synth import write_dataset
from sapiens2.training.checkpointing import list_checkpoints
from sapiens2.training.config import OptimConfig, default_config, load_config
from sapiens2.training.logging import read_metrics_csv
from sapiens2.training.optim import layer_id, lr_factor, param_groups
from sapiens2.training.trainer import Trainer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("train"), num=24, seed=0, height=128, width=96, max_people=1,
                         progress=False)


def tiny(task, data, out, **over):
    sets = {"data.train": str(data), "data.input_size": "[64,48]", "data.batch_size": 4, "data.num_workers": 0,
            "num_iters": 6, "optim.lr": 1e-3, "optim.warmup_iters": 2, "progress": "false", "output_dir": str(out),
            "save_every": 0, "eval_every": 0, "device": "cpu", "log_every": 1, **over}
    return load_config(task, "sapiens2_tiny", overrides=[f"{k}={v}" for k, v in sets.items()])


def test_official_defaults_and_overrides(tmp_path):
    c = default_config("pose", "sapiens2-pretrain-1b")
    assert (c.optim.lr, c.optim.weight_decay, c.optim.layer_decay_rate, c.optim.clip_grad, c.num_iters) == \
        (5e-4, 0.1, 0.9, 4.0, 20000)
    assert c.optim.warmup_iters == 500 and c.data.input_size == (1024, 768) and c.data.batch_size == 1
    assert default_config("normal", "sapiens2-pretrain-5b").optim.lr == 1e-4
    assert default_config("seg", "sapiens2-pretrain-0.4b").optim.layer_decay_rate == 0.8
    (tmp_path / "c.yaml").write_text("num_iters: 7\noptim:\n  lr: 0.002\ndata:\n  input_size: [128, 96]\n"
                                     "loss:\n  dice_weight: 0\n")
    c = load_config("seg", "sapiens2_tiny", tmp_path / "c.yaml", ["optim.lr=3e-3", "data.augment=false",
                                                                  "loss.ce_weight=2"])
    assert (c.num_iters, c.optim.lr, c.data.input_size, c.data.augment) == (7, 3e-3, (128, 96), False)
    assert c.loss == {"dice_weight": 0, "ce_weight": 2}
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        load_config("seg", overrides=["optim.lrr=1"])
    with pytest.raises(ValueError, match="integer"):
        load_config("seg", overrides=["num_iters=1.5"])
    with pytest.raises(ValueError, match="unknown training task"):
        load_config("matting")
    with pytest.raises(ValueError, match="rope_dtype=fp32"):
        load_config("seg", overrides=["precision=fp16"])


def test_layer_decay_groups_and_schedule():
    model = sapiens2.build_model("seg", "sapiens2_tiny", img_size=(32, 32))
    depth = model.backbone.arch.depth
    assert layer_id("backbone.cls_token", depth) == 0 and layer_id("backbone.patch_embed.projection.weight", depth) == 0
    assert layer_id("backbone.blocks.3.attn.wq.weight", depth) == 4
    assert layer_id("backbone.ln1.weight", depth) == layer_id("decode_head.conv_seg.weight", depth) == depth + 1
    groups = param_groups(model.named_parameters(), depth, 1.0, 0.1, 0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["decode_head.conv_seg.weight"]["lr"] == 1.0
    assert by_name["backbone.blocks.0.attn.wq.weight"]["lr"] == pytest.approx(0.5 ** depth)
    assert by_name["backbone.cls_token"]["lr"] == pytest.approx(0.5 ** (depth + 1))
    assert by_name["decode_head.conv_seg.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.attn.wq.weight"]["weight_decay"] == 0.1
    assert len(by_name) == sum(1 for _ in model.parameters())
    cfg = OptimConfig(warmup_iters=10, warmup_start_factor=1e-3)
    assert lr_factor(0, 110, cfg) == pytest.approx(1e-3) and lr_factor(10, 110, cfg) == 1.0
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5) and lr_factor(110, 110, cfg) == 0.0
    cos = OptimConfig(warmup_iters=0, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(50, 100, cos) == pytest.approx(0.55)


def test_resume_reproduces_the_uninterrupted_run(data, tmp_path):
    full = Trainer(tiny("seg", data, tmp_path / "a", save_every=2, keep_last=2)).fit()
    # 6 noisy steps prove no learning (test_train_learning.py does): here, that they trained at all
    assert len(full.losses) == 6 and np.isfinite(full.losses).all()
    torch.manual_seed(0)
    from sapiens2.training.trainer import build_training_model
    init = build_training_model("seg", "sapiens2_tiny", (64, 48)).state_dict()
    with safe_open(str(tmp_path / "a" / "model.safetensors"), "pt") as f:
        assert all(not torch.equal(f.get_tensor(k), init[k]) for k in f.keys() if k.endswith("weight"))
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["step_00000004", "step_00000006"]
    part = Trainer(tiny("seg", data, tmp_path / "b", save_every=2), stop_after=3).fit()
    assert len(part.losses) == 3
    rest = Trainer(tiny("seg", data, tmp_path / "b", save_every=2), resume=True).fit()
    assert rest.start_step == 3 and len(rest.losses) == 3
    assert part.losses + rest.losses == full.losses  # bit-identical curve
    rows = [(s, v) for s, n, v in read_metrics_csv(tmp_path / "b" / "metrics.csv") if n == "train/loss"]
    assert [s for s, _ in rows] == [1, 2, 3, 4, 5, 6]  # one clean history after the resume
    a = safe_open(str(tmp_path / "a" / "model.safetensors"), "pt")
    b = safe_open(str(tmp_path / "b" / "model.safetensors"), "pt")
    assert set(a.keys()) == set(b.keys())
    assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_checkpoint_is_official_layout_and_loads_for_predict_and_eval(data, tmp_path, capsys):
    Trainer(tiny("pointmap", data, tmp_path, **{"data.input_size": "[64,48]",
                                                "head": '{"scale_conv_out_channels": [16], '
                                                        '"scale_conv_kernel_sizes": [1]}'})).fit()
    path = tmp_path / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        assert f.metadata()["task"] == "pointmap" and f.metadata()["img_size"] == "64x48"
    model = sapiens2.build_model("pointmap", "sapiens2_tiny", img_size=(64, 48),
                                 head_config={"scale_conv_out_channels": (16,), "scale_conv_kernel_sizes": (1,)})
    assert keys == set(model.state_dict())
    assert all(k.startswith(("backbone.", "decode_head.")) for k in keys)
    loaded = sapiens2.load_model(path, img_size=(64, 48))
    assert loaded.task == "pointmap"
    from sapiens2.cli import eval as eval_cli
    p = argparse.ArgumentParser()
    eval_cli.add_parser(p)
    out = tmp_path / "res.json"
    args = p.parse_args(["--task", "pointmap", "--data", str(data), "--checkpoint", str(path), "-o", str(out),
                         "--no-progress", "--device", "cpu"])
    assert eval_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "dist_m" in printed and "abs_rel" in printed
    saved = json.loads(out.read_text())
    assert saved["task"] == "pointmap" and saved["items"] == 24 and saved["input_size"] == [64, 48]
    assert np.isfinite(saved["metrics"]["dist_m"])


def test_cli_train_flags_and_errors(data, tmp_path, capsys):
    from sapiens2.cli import train as train_cli
    p = argparse.ArgumentParser()
    train_cli.add_parser(p)
    args = p.parse_args(["--task", "albedo", "--data", str(data), "--model", "sapiens2_tiny", "--iters", "3",
                         "--batch-size", "2", "-o", str(tmp_path), "--set", "data.input_size=[64,48]",
                         "--set", "data.num_workers=0", "--set", "device=cpu", "--val-fraction", "0.25",
                         "--no-progress"])
    assert train_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "trained albedo for steps 1..3" in out and "mae" in out
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "model.safetensors").exists()
    args = p.parse_args(["--task", "seg", "--data", str(data), "--set", "optim.bogus=1"])
    assert train_cli.run(args) == 2
    assert "unknown config key 'optim.bogus'" in capsys.readouterr().err
    args = p.parse_args(["--task", "seg", "--data", str(data), "--print-config", "--lr", "0.01"])
    assert train_cli.run(args) == 0
    assert "lr: 0.01" in capsys.readouterr().out


def test_activation_checkpointing_is_exact_and_frozen_backbone_stays(data, tmp_path):
    plain = Trainer(tiny("normal", data, tmp_path / "p", num_iters=2)).fit()
    ckpt = Trainer(tiny("normal", data, tmp_path / "c", num_iters=2, activation_checkpointing="true")).fit()
    assert ckpt.losses == plain.losses
    Trainer(tiny("normal", data, tmp_path / "f", num_iters=2, freeze_backbone="true")).fit()
    torch.manual_seed(0)
    from sapiens2.training.trainer import build_training_model
    init = build_training_model("normal", "sapiens2_tiny", (64, 48)).state_dict()
    with safe_open(str(tmp_path / "f" / "model.safetensors"), "pt") as f:
        assert all(torch.equal(f.get_tensor(k), init[k]) for k in f.keys() if k.startswith("backbone."))
        assert not all(torch.equal(f.get_tensor(k), init[k]) for k in f.keys() if k.startswith("decode_head."))


def test_init_from_a_pretrain_checkpoint(data, tmp_path):
    from safetensors.torch import save_file
    torch.manual_seed(1)
    backbone = sapiens2.build_backbone("sapiens2_tiny", img_size=(64, 48))
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp_path / "pre.safetensors"))
    from sapiens2.training.trainer import build_training_model
    model = build_training_model("seg", str(tmp_path / "pre.safetensors"), (64, 48))
    for k, v in backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)


def test_a_new_run_never_mixes_with_an_earlier_one(data, tmp_path, capsys):
    # issue 22 item 3: without --resume a folder holding another run is refused; --overwrite deletes that run
    from sapiens2.cli.main import main
    from sapiens2.errors import RunExistsError

    out = tmp_path / "run"
    Trainer(tiny("seg", data, out, num_iters=4, save_every=2, keep_last=5)).fit()
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002", "step_00000004"]
    with pytest.raises(RunExistsError, match="holds another run .*step_00000004.*--resume.*--overwrite"):
        Trainer(tiny("seg", data, out, num_iters=2))
    argv = ["train", "--task", "seg", "--data", str(data), "--model", "sapiens2_tiny", "--iters", "2",
            "--batch-size", "4", "-o", str(out), "--input-size", "64x48", "--set", "data.num_workers=0",
            "--set", "device=cpu", "--set", "save_every=0", "--set", "log_every=1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: sapiens2 train" in err and "sapiens2 train: error:" in err and "holds another run" in err
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002", "step_00000004"]  # untouched
    assert main([*argv, "--overwrite"]) == 0
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]  # only the new run's checkpoint
    assert [s for s, n, _ in read_metrics_csv(out / "metrics.csv") if n == "train/loss"] == [1, 2]
    # a later resume continues the new run (at its end: nothing left to do), never the old step 4
    rest = Trainer(tiny("seg", data, out, num_iters=2), resume=True).fit()
    assert rest.start_step == 2 and rest.losses == []


def test_pretrain_without_resume_refuses_a_folder_with_a_run(tmp_path):
    from sapiens2.errors import RunExistsError
    from sapiens2.training.pretrain.config import PretrainConfig
    from sapiens2.training.pretrain.trainer import pretrain

    (tmp_path / "pt" / "checkpoints" / "step_00000010").mkdir(parents=True)
    (tmp_path / "pt" / "metrics.csv").write_text("step,name,value\n")
    cfg = PretrainConfig(data=str(tmp_path / "images"), arch="sapiens2_tiny", output_dir=str(tmp_path / "pt"),
                         resume=False, device="cpu")
    with pytest.raises(RunExistsError, match="step_00000010"):
        pretrain(cfg)
    assert (tmp_path / "pt" / "checkpoints" / "step_00000010").is_dir()
