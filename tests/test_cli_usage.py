"""Command-line behaviour shared by the sub-commands (issue 22 items 6-9, 14): one device rule with clear errors,
usage errors with status 2 under the sub-command's own usage line, option validation before any work, one
spelling per option, --version, progress bars only on terminals. Tiny and fast: no model runs except where said."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sapiens2.cli.main import main

import sapiens2

SRC = Path(sapiens2.__file__).resolve().parents[1]  # the sapiens2 under test, for subprocesses


@pytest.fixture()
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has (the CPU-only torch case of the issue)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture(scope="module")
def pose_checkpoint(tmp_path_factory) -> Path:
    from sapiens2.models.task_model import build_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny_pose.safetensors"
    model = build_model("pose", "sapiens2_tiny", img_size=(64, 48))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture()
def photo(tmp_path) -> Path:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    return path


# ------------------------------------------------------------------------------------------- item 6: devices
def test_resolve_device_names_what_is_available(no_cuda, monkeypatch):
    from sapiens2.errors import DeviceError, UsageError
    from sapiens2.runtime import available_devices, resolve_device

    assert resolve_device("auto") in (torch.device("cpu"), torch.device("mps"))
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(DeviceError, match=r"CUDA is not available.*available devices: .*cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device 'gpu'.*cuda:N"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS .* not available"):
        resolve_device("mps")
    assert available_devices() == ["cpu"]
    # a machine with two GPUs: cuda:5 does not exist; a bare "cuda" takes this process's LOCAL_RANK
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"cuda:5.*2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:5")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert issubclass(DeviceError, UsageError)


def _eval_args(tmp_path):
    return ["eval", "--task", "seg", "--data", str(tmp_path), "--checkpoint", "sapiens2-seg-0.4b"]


@pytest.mark.parametrize("command", ["predict", "features", "eval", "train", "pretrain", "serve"])
def test_unavailable_device_is_one_clear_error(command, no_cuda, tmp_path, photo, capsys):
    argv = {"predict": ["predict", "--task", "seg", str(photo), "-o", str(tmp_path / "out")],
            "features": ["features", "--random-weights", "sapiens2_tiny", "--input-size", "64x48", str(photo),
                         "-o", str(tmp_path / "out")],
            "eval": _eval_args(tmp_path),
            "train": ["train", "--task", "seg", "--data", str(tmp_path), "--model", "sapiens2_tiny",
                      "-o", str(tmp_path / "run")],
            "pretrain": ["pretrain", "--data", str(tmp_path), "--arch", "tiny", "--out", str(tmp_path / "pt")],
            "serve": ["serve", "--task", "seg"],
            }[command]
    if command == "serve":
        pytest.importorskip("fastapi", reason="the serve extra is not installed")
    rc = main([*argv, "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"usage: sapiens2 {command}" in err and "Traceback" not in err
    assert f"sapiens2 {command}: error: CUDA is not available" in err and "available devices: cpu" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()  # refused before any work


# ------------------------------------------------------------------------------------- item 7: usage errors
@pytest.mark.parametrize("extra, message", [
    (["--input-size", "250x190"], "multiples of 16"),
    (["--detector", "yolo"], "use rtdetr[:NAME|PATH], hog, seg, onnx:PATH or none"),
    (["--start", "0.5", "--end", "0.2"], "--end 0.2 is not after --start 0.5"),
    (["--start", "30f", "--end", "10f"], "is not after"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_predict_usage_errors_exit_2_before_any_work(extra, message, tmp_path, photo, capsys, monkeypatch):
    import sapiens2.cli.predict as predict_cli

    monkeypatch.setattr(predict_cli, "build_predictor", lambda *a, **k: pytest.fail("no model may be loaded"))
    rc = main(["predict", "--task", "pose", str(photo), "-o", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "usage: sapiens2 predict" in err
    assert "whole_image" not in err and "file:PATH" not in err  # Python-only detector values
    assert not (tmp_path / "out").exists()


def test_predict_output_that_is_a_file_is_a_usage_error(tmp_path, photo, capsys):
    (tmp_path / "taken").write_text("x")
    rc = main(["predict", "--task", "pose", str(photo), "-o", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file" in err and "usage: sapiens2 predict" in err


@pytest.mark.parametrize("argv, command, message", [
    (["features", "a.png", "--input-size", "256", "192"], "features", "--input-size must look like HxW"),
    (["train", "--task", "seg", "--data", "d", "--freeze-backbone"], "train", "--freeze-backbone"),
    (["eval", "--task", "seg", "--data", "d", "--checkpoint", "c", "--input-size", "64", "48", "32"], "eval",
     "--input-size takes HxW"),
])
def test_argument_errors_show_the_sub_command_usage(argv, command, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"usage: sapiens2 {command} ") and f"sapiens2 {command}: error: " in err
    assert message in err


# ---------------------------------------------------------------------------- item 8: the seg person detector
def test_seg_detector_without_a_seg_model_says_how_to_give_one(pose_checkpoint, tmp_path, photo, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    rc = main(["predict", "--checkpoint", str(pose_checkpoint), "--detector", "seg", str(photo),
               "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "--detector seg finds people with a seg model" in err
    assert "--checkpoint seg=PATH" in err and "sapiens2-seg-0.4b" not in err


# ----------------------------------------------------------------------- item 9: bfloat16 on CPU, no warning
def test_rms_norm_runs_in_float32_under_autocast():
    from sapiens2.models.norm import RMSNorm

    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.randn(2, 3, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.float32  # what CUDA's autocast does with rms_norm
    torch.testing.assert_close(out, torch.nn.functional.rms_norm(x.float(), (8,), norm.weight, 1e-6))
    plain = torch.randn(4, 8)
    assert torch.equal(norm(plain), torch.nn.functional.rms_norm(plain, (8,), norm.weight, 1e-6))  # no autocast


def test_bfloat16_on_cpu_prints_no_dtype_mismatch_warning(pose_checkpoint, tmp_path, photo):
    # a fresh process: torch prints this warning once per process, so an earlier test could hide it
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-W", "always", "-m", "sapiens2", "predict", "--checkpoint",
                           str(pose_checkpoint), "--detector", "none", "--input-size", "64x48", "--device", "cpu",
                           "--dtype", "bfloat16", str(photo), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Mismatch dtype" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert (tmp_path / "out" / "a.pose.json").exists()


# ------------------------------------------------------------------------------------ item 14: consistency
def test_version(capsys):
    import sapiens2

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"sapiens2 {sapiens2.__version__}"


def test_one_spelling_for_input_size_and_dtype(tmp_path, capsys):
    from sapiens2.cli.main import build_parser

    parser = build_parser()
    ev = parser.parse_args(["eval", "--task", "seg", "--data", "d", "--checkpoint", "c", "--input-size", "64x48",
                            "--dtype", "bfloat16"])
    assert ev.input_size == (64, 48) and ev.dtype == "bfloat16"
    old = parser.parse_args(["eval", "--task", "seg", "--data", "d", "--checkpoint", "c", "--input-size", "64",
                             "48", "--precision", "bf16"])  # the older spellings still work
    assert old.input_size == (64, 48) and old.dtype == "bfloat16"
    assert "deprecated" in capsys.readouterr().err
    pre = parser.parse_args(["pretrain", "--input-size", "32x32", "--dtype", "float32"])
    assert pre.size == (32, 32) and pre.dtype == "float32"
    assert parser.parse_args(["pretrain", "--size", "32", "32", "--precision", "fp32"]).size == (32, 32)
    data = tmp_path / "data"
    data.mkdir()
    assert main(["train", "--task", "seg", "--data", str(data), "--model", "sapiens2_tiny", "--input-size",
                 "128x96", "--dtype", "bfloat16", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "input_size:\n  - 128\n  - 96" in printed and "precision: bf16" in printed
    assert main(["train", "--task", "seg", "--data", str(data), "--precision", "fp32", "--print-config"]) == 0
    assert "precision: fp32" in capsys.readouterr().out


def test_eval_output_is_a_folder(tmp_path):
    from sapiens2.cli.eval import _output_path
    from sapiens2.errors import UsageError

    assert _output_path(str(tmp_path), "seg") == tmp_path / "eval_seg.json"
    assert _output_path(None, "pose") == Path("eval_pose.json")
    assert _output_path(str(tmp_path / "res.json"), "seg") == tmp_path / "res.json"  # the older form: a file
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        _output_path(str(tmp_path / "file"), "seg")


def test_errors_share_one_prefix(tmp_path, capsys):
    rc = main(["train", "--task", "seg", "--data", str(tmp_path), "--set", "optim.bogus=1"])
    assert rc == 2 and capsys.readouterr().err.startswith("sapiens2 train: error: unknown config key")
    rc = main(["pretrain", "--arch", "tiny", "--out", str(tmp_path / "pt")])
    assert rc == 2 and capsys.readouterr().err.startswith("sapiens2 pretrain: error: --data is required")


def test_progress_bars_only_on_a_terminal(tmp_path, photo, capsys):
    args = ["features", str(photo), "--random-weights", "sapiens2_tiny", "--input-size", "64x48"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0  # stderr is captured: not a terminal
    assert "img/s" not in capsys.readouterr().err and "it/s" not in capsys.readouterr().err
    assert main([*args, "--progress", "-o", str(tmp_path / "b")]) == 0
    assert "features: 100%" in capsys.readouterr().err


def test_repeated_runs_do_not_repeat_log_lines(tmp_path, photo, capsys, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a bare process (pytest's capture handler aside)
    for _ in range(3):  # main() many times in one process, as in a notebook
        main(["features", str(photo), "--random-weights", "sapiens2_tiny", "--input-size", "64x48",
              "-o", str(tmp_path / "o")])
    assert sum(getattr(h, "_sapiens2", False) for h in logging.getLogger().handlers) == 1
    assert capsys.readouterr().err.count("random weights (sapiens2_tiny)") == 3  # once per run


def test_synth_usage_errors_share_the_form(tmp_path, capsys):
    assert main(["synth", "--num", "-1", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "usage: sapiens2 synth" in err and "sapiens2 synth: error: --num must be >= 0" in err
