"""Hugging Face transformers' own Sapiens2 models as the real client of our checkpoint handling (issue 19).

Both directions, for every task transformers has (pose, seg, normal, pointmap, matting) on ``sapiens2_tiny``:
random-weight transformers models written by ``save_pretrained`` load through ``sapiens2.load_model``, and our
models written by ``save_transformers`` load through ``from_pretrained`` with no missing or unexpected keys; in
both the outputs agree to 1e-4 relative.

RoPE: transformers computes it in float32 from its own ``inv_freq`` and has no bf16 mode; our default is the
official bf16 RoPE (what the published checkpoints were trained with), which differs from float32 by ~4e-4
relative on these models. So our side runs with ``rope_dtype="fp32"`` to compare like with like.
"""
import json

import pytest
import torch
from safetensors.torch import save_file

import sapiens2
from sapiens2.checkpoints import save_transformers, to_transformers
from sapiens2.tasks.pose.flip import flip_heatmaps_back

from conftest import rel_err

transformers = pytest.importorskip(
    "transformers", reason="transformers (the curate extra) is not installed: nothing to compare against")
Sapiens2Config = pytest.importorskip("transformers.models.sapiens2", reason="this transformers has no Sapiens2"
                                     ).Sapiens2Config

SIZES = {"pointmap": (256, 192)}  # the tiny scale branch needs a 16x12 grid (InstanceNorm on > 1 cell)
MODEL_CLASSES = {
    "pose": "Sapiens2ForPoseEstimation", "seg": "Sapiens2ForSemanticSegmentation",
    "normal": "Sapiens2ForNormalEstimation", "pointmap": "Sapiens2ForPointmapEstimation",
    "matting": "Sapiens2ForImageMatting",
}
# sapiens2_tiny written the way a transformers user would, with transformers' own defaults where they fit
# (GQA from num_key_value_attention_heads, kernel sizes from the single-value defaults).
_TINY = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=18, num_attention_heads=4,
             num_key_value_attention_heads=2)
_DENSE = dict(use_pixel_shuffle=True, upsample_out_channels=[32, 16, 16, 16], upsample_kernel_size=3,
              conv_out_channels=[16, 8, 8], conv_kernel_size=3)
HF_HEADS = {
    "pose": (dict(upsample_out_channels=[32, 32], conv_out_channels=[32, 32, 16]), 308),
    "seg": (dict(upsample_out_channels=[32, 16, 16, 16], conv_out_channels=[16, 16]), 29),
    "normal": (_DENSE, 3),
    "matting": (_DENSE, 4),
    "pointmap": ({**_DENSE, "scale_conv_out_channels": [32, 16, 8], "scale_final_hidden_sizes": [16, 8]}, 3),
}
TASKS = tuple(MODEL_CLASSES)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _size(task):
    return SIZES.get(task, (128, 96))


def _hf_class(task):
    return getattr(transformers, MODEL_CLASSES[task])


def _hf_model(task):
    head, labels = HF_HEADS[task]
    config = Sapiens2Config(**_TINY, image_size=list(_size(task)), head_config=head, num_labels=labels)
    torch.manual_seed(0)
    return _hf_class(task)(config).eval()


def _hf_output(task, out):
    """transformers' output as ours: matting is split after its sigmoid into foregrounds (3) + alphas (1), ours
    is the (B, 4) tensor; pointmap is (pointmaps, scales), ours the same tuple. Nothing is upsampled on either
    side (seg logits are at input size, pose heatmaps at 1/4, in both)."""
    return {
        "pose": lambda: out.heatmaps, "seg": lambda: out.logits, "normal": lambda: out.normals,
        "matting": lambda: torch.cat((out.foregrounds, out.alphas), dim=1),
        "pointmap": lambda: (out.pointmaps, out.scales),
    }[task]()


def _assert_same(ours, theirs):
    for a, b in zip(ours, theirs) if isinstance(ours, tuple) else ((ours, theirs),):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-4


def _scramble(model):
    """Random weights of the scale real checkpoints have: our init's LayerScale of 1e-4 would hide almost every
    block from the output, so a swapped or mis-split tensor could still match."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "token" not in name:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:  # norm weights, LayerScale, class/storage tokens
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("task", TASKS)
def test_transformers_save_pretrained_loads_with_the_same_outputs(tmp_path, task):
    hf = _hf_model(task)
    hf.save_pretrained(tmp_path / "hf")
    # transformers 5 writes official key names (minus rope periods); its in-memory names are the other layout
    mem = tmp_path / "in_memory.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(mem))
    x = torch.randn(1, 3, *_size(task))
    with torch.inference_mode():
        want = _hf_output(task, hf(x))
        for source in (tmp_path / "hf", mem):
            ours = sapiens2.load_model(source, rope_dtype="fp32")
            assert ours.task == task and ours.backbone.arch.name == "sapiens2_tiny"
            if source.is_dir():  # a bare file has no config.json to say its size (any size runs but pointmap's)
                assert ours.img_size == _size(task)
            _assert_same(ours(x), want)


@pytest.mark.parametrize("task", TASKS)
def test_our_model_written_for_transformers_loads_there_with_the_same_outputs(tmp_path, task):
    ours = _scramble(sapiens2.build_model(task, "tiny", img_size=_size(task), rope_dtype="fp32")).eval()
    folder = save_transformers(ours, tmp_path / "ours")
    hf, info = _hf_class(task).from_pretrained(folder, output_loading_info=True)
    hf.eval()
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys, no errors
    # our converter's names are exactly the real model's (not a hand-typed list)
    assert set(to_transformers(ours.state_dict())) == set(hf.state_dict())
    x = torch.randn(1, 3, *_size(task))
    with torch.inference_mode():
        _assert_same(ours(x), _hf_output(task, hf(x)))
        if task == "pose":  # the flip_pairs we write drive transformers' flip test like our swap table does
            flipped = x.flip(-1)
            theirs = hf(flipped, flip_pairs=torch.tensor(hf.config.flip_pairs)).heatmaps
            _assert_same(flip_heatmaps_back(ours(flipped)), theirs)
    back = sapiens2.load_model(folder, rope_dtype="fp32")
    assert back.task == task and back.img_size == ours.img_size
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in back.state_dict().items())


def test_sharded_save_pretrained_folder_loads(tmp_path):
    hf = _hf_model("seg")
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    x = torch.randn(1, 3, *_size("seg"))
    with torch.inference_mode():
        _assert_same(sapiens2.load_model(tmp_path, rope_dtype="fp32")(x), hf(x).logits)
    (tmp_path / sorted(set(index["weight_map"].values()))[-1]).unlink()
    with pytest.raises(sapiens2.CheckpointError, match="names shards that are not in the folder"):
        sapiens2.load_model(tmp_path)


def test_backbone_both_ways(tmp_path):
    ours = _scramble(sapiens2.build_backbone("tiny", img_size=(64, 48), rope_dtype="fp32")).eval()
    hf, info = transformers.Sapiens2Model.from_pretrained(save_transformers(ours, tmp_path / "ours"),
                                                          output_loading_info=True)
    assert not any(info.values()), info
    hf.save_pretrained(tmp_path / "hf")
    back = sapiens2.load_backbone(tmp_path / "hf", rope_dtype="fp32")
    assert back.img_size == (64, 48)
    x = torch.randn(1, 3, 64, 48)
    with torch.inference_mode():
        want = hf.eval()(x).last_hidden_state
        _assert_same(ours.forward_tokens(x), want)
        _assert_same(back.forward_tokens(x), want)


def test_what_transformers_cannot_hold_is_refused_before_writing(tmp_path):
    albedo = sapiens2.build_model("albedo", "tiny", img_size=(128, 96), device="meta")
    with pytest.raises(sapiens2.CheckpointError, match="no albedo model"):
        save_transformers(albedo, tmp_path / "albedo")
    pose3 = sapiens2.build_model("pose", "tiny", img_size=(128, 96), device="meta",
                                 head_config={"deconv_kernel_sizes": (3, 3)})
    with pytest.raises(sapiens2.CheckpointError, match="4x4 transposed convs"):
        save_transformers(pose3, tmp_path / "pose3")
    assert not (tmp_path / "albedo").exists() and not (tmp_path / "pose3").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "vit"}')
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(sapiens2.CheckpointError, match="'vit' model, not sapiens2"):
        sapiens2.load_model(tmp_path / "other")


def test_cli_checkpoint_accepts_a_save_pretrained_folder(tmp_path):
    from sapiens2.cli.predict import parse_checkpoints

    _hf_model("matting").save_pretrained(tmp_path / "matting")
    assert parse_checkpoints([str(tmp_path / "matting")]) == {"matting": tmp_path / "matting"}
