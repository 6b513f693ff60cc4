"""load_backbone and the reading / strict-loading steps: formats, wrappers, layouts, dtypes, bad input."""
from __future__ import annotations

import pytest
import torch
from conftest import rel_err
from safetensors.torch import load_file, save_file

from sapiens2 import build_backbone
from sapiens2.checkpoints import (backbone_state_dict, load_backbone, load_state_dict_strict, read_official_state_dict,
                                  read_state_dict, to_transformers)
from sapiens2.errors import ArchMismatchError, CheckpointError

INPUT_HW = (64, 48)


def random_tiny_state(use_tokenizer: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny backbone's official state dict with every parameter random (norms and LayerScale included),
    so that any key landing in the wrong place changes the output."""
    torch.manual_seed(seed)
    model = build_backbone("tiny", img_size=INPUT_HW, use_tokenizer=use_tokenizer)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.05) + (1.0 if name.endswith("ln1.weight") else 0))
    return {k: v.clone() for k, v in model.state_dict().items()}


def reference_tokens(state: dict[str, torch.Tensor], use_tokenizer: bool = False,
                     hw: tuple[int, int] = INPUT_HW) -> tuple[torch.Tensor, torch.Tensor]:
    model = build_backbone("tiny", img_size=hw, use_tokenizer=use_tokenizer)
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model.forward_tokens(x)


def tokens(model, x):
    with torch.no_grad():
        return model.forward_tokens(x)


@pytest.fixture(scope="module")
def tiny_state():
    return random_tiny_state()


@pytest.fixture(scope="module")
def tiny_reference(tiny_state):
    return reference_tokens(tiny_state)


# -- the official fixture --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["backbone-tiny", "backbone-tiny-4k"])
def test_official_fixture_reproduced_through_load_backbone(official_dir, official_cases, case):
    spec = official_cases[case]
    model = load_backbone(official_dir / spec["weights"])
    io = load_file(str(official_dir / spec["io"]))
    assert model.arch.name == "sapiens2_tiny"
    assert model.use_tokenizer == bool(spec.get("use_tokenizer", False))
    assert not model.training
    assert rel_err(tokens(model, io["input"]), io["tokens_rope_bf16"]) <= 1e-4
    fp32 = load_backbone(official_dir / spec["weights"], rope_dtype="fp32")
    assert fp32.rope_embed.periods.dtype == torch.float32
    # The official fp32 run recomputed periods; ours uses the file's bf16-rounded ones (spec §2.6), so only close.
    assert rel_err(tokens(fp32, io["input"]), io["tokens_rope_fp32"]) <= 1e-2


def test_task_file_gives_its_backbone(official_dir, official_cases, tmp_path):
    spec = official_cases["pose-tiny"]
    state = {f"backbone.{k}": v for k, v in load_file(str(official_dir / spec["backbone_weights"])).items()}
    state.update(load_file(str(official_dir / spec["head_weights"])))
    path = tmp_path / "pose-task.safetensors"
    save_file(state, str(path))
    model = load_backbone(path)
    io = load_file(str(official_dir / official_cases["backbone-tiny"]["io"]))
    assert rel_err(tokens(model, io["input"]), io["tokens_rope_bf16"]) <= 1e-4
    assert set(backbone_state_dict(read_official_state_dict(path))) == set(model.state_dict())


# -- formats and wrappers ---------------------------------------------------------------------------------
def test_safetensors_roundtrip_identical(tiny_state, tiny_reference, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    model = load_backbone(path, img_size=INPUT_HW)
    x, ref = tiny_reference
    assert torch.equal(tokens(model, x), ref)
    assert model.img_size == INPUT_HW


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "meta": {"epoch": 3, "note": "x"}},
    lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"lr": 0.1}},
    lambda sd: {"teacher": {f"backbone.{k}": v for k, v in sd.items()}, "iteration": 7},
    lambda sd: {"module": sd},
    lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},
], ids=["state_dict", "model+module.", "teacher+backbone.", "module", "ddp+compile-prefix"])
@pytest.mark.parametrize("suffix", [".pth", ".bin"])
def test_pytorch_wrappers(tiny_state, tiny_reference, tmp_path, wrap, suffix):
    path = tmp_path / f"tiny{suffix}"
    torch.save(wrap(tiny_state), path)
    model = load_backbone(path)
    x, ref = tiny_reference
    assert torch.equal(tokens(model, x), ref)


def test_legacy_pickle_format(tiny_state, tiny_reference, tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": tiny_state}, path, _use_new_zipfile_serialization=False)
    x, ref = tiny_reference
    assert torch.equal(tokens(load_backbone(path), x), ref)


def test_format_decided_by_content_not_suffix(tiny_state, tiny_reference, tmp_path):
    path = tmp_path / "actually-safetensors.pth"
    save_file(tiny_state, str(path))
    x, ref = tiny_reference
    assert torch.equal(tokens(load_backbone(path), x), ref)


@pytest.mark.parametrize("task_file", [False, True], ids=["pretrain", "task"])
def test_transformers_layout(tiny_state, tiny_reference, tmp_path, task_file):
    state = {f"backbone.{k}": v for k, v in tiny_state.items()} if task_file else tiny_state
    hf = {k: v.contiguous() for k, v in to_transformers(state).items()}
    assert not any("periods" in k for k in hf)  # as transformers writes it
    assert ("model.embeddings.register_tokens" in hf) == task_file
    path = tmp_path / "model.safetensors"
    save_file(hf, str(path))
    model = load_backbone(path)
    x, ref = tiny_reference
    # periods are refilled from the model's own bf16 computation, which is what the tiny model holds too
    assert torch.equal(model.rope_embed.periods, tiny_state["rope_embed.periods"])
    assert torch.equal(tokens(model, x), ref)


def test_tokenizer_inferred_from_file(tmp_path):
    state = random_tiny_state(use_tokenizer=True, seed=3)
    x, ref = reference_tokens(state, use_tokenizer=True, hw=(128, 64))
    path = tmp_path / "tiny4k.safetensors"
    save_file(state, str(path))
    model = load_backbone(path)
    assert model.use_tokenizer and model.img_size == (4096, 3072)
    assert torch.equal(tokens(model, x), ref)


# -- dtype, memory sharing ----------------------------------------------------------------------------------
def test_keeps_file_dtype_unless_asked(tiny_state, tmp_path):
    path = tmp_path / "bf16.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in tiny_state.items()}, str(path))
    model = load_backbone(path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rope_embed.periods.dtype == torch.bfloat16
    x = torch.randn(1, 3, *INPUT_HW)
    assert tokens(model, x.bfloat16()).dtype == torch.bfloat16

    as_fp32 = load_backbone(path, dtype=torch.float32, rope_dtype="fp32")
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}
    assert as_fp32.rope_embed.periods.dtype == torch.float32  # buffers follow the model, not `dtype`
    assert torch.equal(as_fp32.cls_token, tiny_state["cls_token"].bfloat16().float())


def test_weights_are_assigned_not_copied(tiny_state, tmp_path):
    """With assign=True the parameters are the tensors read from the file (no second copy)."""
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    state = read_state_dict(path)
    model = build_backbone("tiny", img_size=INPUT_HW, device="meta")
    load_state_dict_strict(model, state)
    assert model.blocks[3].ffn.w12.weight.data_ptr() == state["blocks.3.ffn.w12.weight"].data_ptr()
    assert not any(t.is_meta for t in model.state_dict().values())


# -- bad input ------------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match=r"does not exist.*'sapiens2-pose-1b'"):
        load_backbone(str(tmp_path / "sapiens2_1b_pose.safetensors"))


def test_directory(tiny_state, tmp_path):
    save_file(tiny_state, str(tmp_path / "inside.safetensors"))
    with pytest.raises(CheckpointError, match=r"is a directory.*inside\.safetensors"):
        load_backbone(tmp_path)


@pytest.mark.parametrize("content, match", [
    (bytes(range(256)) * 40, "not a checkpoint: its content is neither"),
    (b"model:\n  arch: sapiens2_1b\n" * 20, "looks like a text file"),
    (b"", "empty file"),
], ids=["random-bytes", "text", "empty"])
def test_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_backbone(path)


def test_truncated_safetensors(official_dir, tmp_path):
    data = (official_dir / "backbone-tiny.safetensors").read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated safetensors"):
            load_backbone(path)


def test_truncated_pth(tiny_state, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(tiny_state, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read PyTorch file"):
        load_backbone(bad)


class _NotATensor:
    pass


def test_pickle_with_objects_is_refused(tiny_state, tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"state_dict": tiny_state, "cfg": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_backbone(path)


def test_pth_without_state_dict(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_backbone(path)


def test_other_arch_explicitly_requested(official_dir):
    """A tiny file into an explicitly requested 0.1b model (built on meta: costs no memory)."""
    with pytest.raises(ArchMismatchError) as info:
        load_backbone(official_dir / "backbone-tiny.safetensors", arch="0.1b")
    err = info.value
    assert err.mismatched["cls_token"] == ((1, 1, 64), (1, 1, 768))
    assert "blocks.0.attn.q_norm.weight" in err.mismatched
    assert "blocks.17.ln1.weight" in err.unexpected and not err.missing  # tiny has 18 blocks, 0.1b 12
    msg = str(err)
    assert "cls_token: checkpoint [1, 1, 64] vs model [1, 1, 768]" in msg
    assert "does not fit sapiens2_0.1b" in msg
    assert "looks like sapiens2_tiny" in msg and "asked for sapiens2_0.1b" in msg


def test_tokenizer_mismatch_lists_keys(official_dir):
    with pytest.raises(ArchMismatchError) as info:
        load_backbone(official_dir / "backbone-tiny-4k.safetensors", use_tokenizer=False)
    assert "tokenizer.w_cls" in info.value.unexpected and not info.value.missing
    with pytest.raises(ArchMismatchError) as info:
        load_backbone(official_dir / "backbone-tiny.safetensors", use_tokenizer=True)
    assert "tokenizer.local_pos_embed" in info.value.missing


def test_shapes_of_no_arch(tiny_state, tmp_path):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("blocks.17.")}  # 17 blocks
    path = tmp_path / "odd.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"match no Sapiens2 arch: embed 64, 17 blocks"):
        load_backbone(path)


def test_head_only_file(official_dir):
    with pytest.raises(CheckpointError, match="only a task head"):
        load_backbone(official_dir / "pose-tiny-head.safetensors")


def test_not_a_backbone_state_dict(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(CheckpointError, match="not a Sapiens2 backbone checkpoint"):
        load_backbone(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_onto_cuda(tiny_state, tiny_reference, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(tiny_state, str(path))
    model = load_backbone(path, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert model.rope_embed.periods.device.type == "cuda"
    x, ref = tiny_reference
    assert rel_err(tokens(model, x.cuda()).cpu(), ref) <= 1e-4
