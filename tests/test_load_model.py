"""sapiens2.load_model: task checkpoints by path or name, task and arch inferred from the file."""
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

import sapiens2
from sapiens2.checkpoints import to_transformers
from sapiens2.models.heads import TASKS

from conftest import rel_err

SIZES = {"pointmap": (256, 192)}


def _saved(tmp_path, task, **kw):
    torch.manual_seed(0)
    model = sapiens2.build_model(task, "tiny", img_size=SIZES.get(task, (128, 96)), **kw).eval()
    path = tmp_path / f"{task}.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def _out(model, x):
    with torch.inference_mode():
        y = model(x)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("task", TASKS)
def test_round_trip_infers_task_and_arch(tmp_path, task):
    model, path = _saved(tmp_path, task)
    loaded = sapiens2.load_model(path)
    assert loaded.task == task and loaded.backbone.arch.name == "sapiens2_tiny"
    assert not loaded.training
    x = torch.randn(1, 3, *SIZES.get(task, (128, 96)))
    assert torch.equal(_out(loaded, x), _out(model, x))


@pytest.mark.parametrize("task", ["pose", "pointmap"])
def test_transformers_layout_loads_to_the_same_model(tmp_path, task):
    model, path = _saved(tmp_path, task)
    hf = tmp_path / "model.safetensors"
    save_file(to_transformers(model.state_dict()), str(hf))
    loaded = sapiens2.load_model(hf)
    assert loaded.task == task
    x = torch.randn(1, 3, *SIZES.get(task, (128, 96)))
    assert torch.equal(_out(loaded, x), _out(model, x))


def test_official_fixture_task_file_reproduces_official_output(tmp_path, official_dir, official_cases):
    case = official_cases["seg-tiny"]
    state = {f"backbone.{k}": v for k, v in load_file(official_dir / case["backbone_weights"]).items()}
    state.update(load_file(official_dir / case["head_weights"]))
    path = tmp_path / "sapiens2_tiny_seg.safetensors"
    save_file(state, str(path))
    model = sapiens2.load_model(path, task="seg")
    io = load_file(official_dir / case["io"])
    with torch.inference_mode():
        assert rel_err(model(io["input"]), io["output0"]) <= 1e-4


def test_wrong_task_and_backbone_only_files_are_refused(tmp_path):
    _, path = _saved(tmp_path, "pose")
    with pytest.raises(sapiens2.CheckpointError, match="pose head, not a seg head"):
        sapiens2.load_model(path, task="seg")
    bb = tmp_path / "backbone.safetensors"
    save_file(sapiens2.build_backbone("tiny").state_dict(), str(bb))
    with pytest.raises(sapiens2.CheckpointError, match="no task head"):
        sapiens2.load_model(bb)


def test_published_name_offline_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    attempts = []  # "fails fast" = no network attempt at all (a wall-clock deadline was flaky on a loaded machine)
    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: attempts.append(address) or real(self, address))
    with pytest.raises(sapiens2.ModelNotAvailableError) as info:
        sapiens2.load_model("sapiens2-seg-0.4b")
    assert attempts == []
    msg = str(info.value)
    assert "facebook/sapiens2-seg-0.4b" in msg and "--checkpoint" in msg


def test_0_4b_task_state_dict_builds_matching_model_on_meta():
    ref = sapiens2.build_model("normal", "0.4b", device="meta").state_dict()
    model = sapiens2.models.build_model_for_state_dict(ref, "0.4b", device="meta")
    assert model.task == "normal"
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.items()}
