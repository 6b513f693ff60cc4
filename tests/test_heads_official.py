"""Task models against the official numerics fixture and the official 0.4b / matting-1b state-dict listings."""
from pathlib import Path

import pytest
import torch
from conftest import rel_err
from safetensors.torch import load_file

from sapiens2.models.heads import head_config_from_dict, infer_head_config, infer_task
from sapiens2.models.task_model import build_model

SPEC = Path(__file__).parent / "data" / "spec"
TASKS = ("pose", "seg", "normal", "albedo", "pointmap", "matting")
EXPECTED_SHAPES = {  # (C, H, W) of output0 for the fixture inputs
    "pose": (308, 32, 24), "seg": (29, 128, 96), "normal": (3, 128, 96), "albedo": (3, 128, 96),
    "pointmap": (3, 256, 192), "matting": (4, 128, 96),
}


@pytest.fixture(scope="module")
def backbone_weights(official_dir):
    return {"backbone." + k: v for k, v in load_file(official_dir / "backbone-tiny.safetensors").items()}


def official_task_state_dict(official_dir, case, backbone_weights):
    return {**backbone_weights, **load_file(official_dir / case["head_weights"])}


@pytest.mark.parametrize("task", TASKS)
def test_fixture_outputs_match_official(task, official_dir, official_cases, backbone_weights):
    case = official_cases[f"{task}-tiny"]
    state_dict = official_task_state_dict(official_dir, case, backbone_weights)
    io = load_file(official_dir / case["io"])
    model = build_model(task, "sapiens2_tiny", img_size=tuple(case["input_hw"]), head_config=case["head_config"])
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(io["input"])
    if task == "pointmap":
        pointmap, scale = out
        assert pointmap.shape == io["output0"].shape and scale.shape == io["output1"].shape == (1, 1)
        assert rel_err(pointmap, io["output0"]) < 1e-4
        assert rel_err(scale, io["output1"]) < 1e-4
    else:
        assert out.shape == (1, *EXPECTED_SHAPES[task])
        assert rel_err(out, io["output0"]) < 1e-4
    if task == "matting":  # the head's own sigmoid
        assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("task", TASKS)
def test_fixture_head_config_is_inferred(task, official_dir, official_cases, backbone_weights):
    case = official_cases[f"{task}-tiny"]
    state_dict = official_task_state_dict(official_dir, case, backbone_weights)
    assert infer_task(state_dict) == task
    expected = head_config_from_dict(task, case["head_config"])
    assert infer_head_config(task, state_dict) == expected
    # The tiny arch's default head layout is the fixture's.
    model = build_model(task, "sapiens2_tiny", img_size=tuple(case["input_hw"]), device="meta")
    assert model.head_config == expected


def read_listing(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The ``# state_dict`` section of a spec listing: key -> (shape, dtype)."""
    body = path.read_text().split("# state_dict\n", 1)[1]
    out = {}
    for line in body.strip().splitlines():
        key, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        out[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return out


@pytest.mark.parametrize("task", ("pose", "seg", "normal", "pointmap", "albedo"))
def test_0_4b_task_model_state_dict_equals_official_listing(task):
    expected = read_listing(SPEC / f"{task}-0.4b-state-dict.txt")
    model = build_model(task, "sapiens2_0.4b", device="meta")
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert got == expected
    assert list(got) == list(expected)  # same order as the official module tree, too


def test_matting_1b_head_keys_equal_official_table():
    # spec/matting-and-transformers.md section 1.3
    expected = {
        "input_conv.0.weight": (1536, 1536, 3, 3), "input_conv.0.bias": (1536,),
        "upsample_blocks.0.0.weight": (3072, 1536, 3, 3), "upsample_blocks.0.0.bias": (3072,),
        "upsample_blocks.1.0.weight": (2048, 768, 3, 3), "upsample_blocks.1.0.bias": (2048,),
        "upsample_blocks.2.0.weight": (1024, 512, 3, 3), "upsample_blocks.2.0.bias": (1024,),
        "upsample_blocks.3.0.weight": (512, 256, 3, 3), "upsample_blocks.3.0.bias": (512,),
        "conv_layers.0.weight": (64, 128, 3, 3), "conv_layers.0.bias": (64,),
        "conv_layers.3.weight": (32, 64, 3, 3), "conv_layers.3.bias": (32,),
        "conv_layers.6.weight": (16, 32, 3, 3), "conv_layers.6.bias": (16,),
        "conv_matting.weight": (4, 16, 1, 1), "conv_matting.bias": (4,),
    }
    model = build_model("matting", "sapiens2_1b", device="meta")
    state = model.state_dict()
    head = {k.removeprefix("decode_head."): tuple(v.shape) for k, v in state.items() if k.startswith("decode_head.")}
    assert head == expected
    assert len(state) == 704
    assert sum(v.numel() for k, v in state.items() if k.startswith("decode_head.")) == 83_860_148
