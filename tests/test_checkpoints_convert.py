"""Arch inference for every arch and the official <-> transformers converter, on meta tensors (no memory)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from sapiens2 import ARCHS, build_backbone
from sapiens2.checkpoints import detect_layout, infer_backbone_config, to_official, to_transformers
from sapiens2.checkpoints.convert import infer_head_task
from sapiens2.errors import CheckpointError

ARCH_VARIANTS = [(name, tok) for name in ARCHS for tok in (False, True)]


def meta_state(arch: str, use_tokenizer: bool) -> dict[str, torch.Tensor]:
    return build_backbone(arch, use_tokenizer=use_tokenizer, device="meta").state_dict()


def shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("arch, use_tokenizer", ARCH_VARIANTS)
def test_arch_inference_and_roundtrip_every_arch(arch, use_tokenizer):
    official = meta_state(arch, use_tokenizer)
    assert infer_backbone_config(official) == (arch, use_tokenizer)
    task = {f"backbone.{k}": v for k, v in official.items()}
    assert infer_backbone_config(task) == (arch, use_tokenizer)

    for sd, prefix in ((official, ""), (task, "backbone.")):
        hf = to_transformers(sd)
        assert detect_layout(hf) == "transformers" and detect_layout(sd) == "official"
        assert infer_backbone_config(hf) == (arch, use_tokenizer)
        back = to_official(hf)
        # transformers stores no RoPE periods (the loader refills them); everything else comes back exactly
        expected = shapes(sd)
        assert expected.pop(f"{prefix}rope_embed.periods") == (ARCHS[arch].head_dim // 4,)
        assert shapes(back) == expected


def test_transformers_names_and_shapes_1b():
    """Spot-check the transformers layout against spec/matting-and-transformers.md §1.3 / §2.3 for 1B."""
    official = meta_state("1b", False)
    assert len(official) == 40 * 17 + 6  # 686 backbone keys (spec §1.3)
    hf = shapes(to_transformers({f"backbone.{k}": v for k, v in official.items()}))
    assert len(hf) == 686 - 1 + 2 * 40  # periods dropped, w12 weight+bias each split in two
    assert hf["model.embeddings.cls_token"] == (1, 1, 1536)
    assert hf["model.embeddings.register_tokens"] == (1, 8, 1536)
    assert hf["model.embeddings.patch_embeddings.weight"] == (1536, 3, 16, 16)
    assert hf["model.model.layer.0.attention.k_proj.weight"] == (1536, 1536)
    assert hf["model.model.layer.8.attention.k_proj.weight"] == (768, 1536)  # GQA block
    assert hf["model.model.layer.31.attention.v_proj.bias"] == (768,)
    assert hf["model.model.layer.32.attention.v_proj.bias"] == (1536,)
    assert hf["model.model.layer.5.attention.q_norm.weight"] == (64,)
    assert hf["model.model.layer.5.attention.o_proj.weight"] == (1536, 1536)
    assert hf["model.model.layer.5.layer_scale1.lambda1"] == (1536,)
    assert hf["model.model.layer.5.mlp.gate_proj.weight"] == (6144, 1536)
    assert hf["model.model.layer.5.mlp.up_proj.bias"] == (6144,)
    assert hf["model.model.layer.5.mlp.down_proj.weight"] == (1536, 6144)
    assert hf["model.model.layer.39.norm2.weight"] == (1536,)
    assert hf["model.norm.weight"] == (1536,)
    pretrain = shapes(to_transformers(official))
    assert "embeddings.cls_token" in pretrain and "model.layer.0.norm1.weight" in pretrain
    assert "norm.weight" in pretrain


def test_w12_split_values_and_refusion(official_dir):
    sd = load_file(str(official_dir / "backbone-tiny.safetensors"))
    hf = to_transformers(sd)
    w12 = sd["blocks.4.ffn.w12.weight"]
    assert torch.equal(hf["model.layer.4.mlp.gate_proj.weight"], w12[:256])  # silu(first half) = gate
    assert torch.equal(hf["model.layer.4.mlp.up_proj.weight"], w12[256:])
    assert torch.equal(hf["model.layer.4.layer_scale1.lambda1"], sd["blocks.4.attn.gamma.weight"])
    back = to_official(hf)
    assert all(torch.equal(back[k], sd[k]) for k in back)


HEAD_SAMPLES = {
    "pose": {"decode_head.upsample_layers.1.convolution.weight": "decode_head.deconv_layers.3.weight",
             "decode_head.conv_layers.2.convolution.bias": "decode_head.conv_layers.6.bias",
             "decode_head.predictor.weight": "decode_head.conv_pose.weight"},
    "seg": {"decode_head.upsample_layers.3.convolution.weight": "decode_head.deconv_layers.9.weight",
            "decode_head.conv_layers.1.convolution.weight": "decode_head.conv_layers.3.weight",
            "decode_head.predictor.bias": "decode_head.conv_seg.bias"},
    "normal": {"decode_head.input_conv.convolution.weight": "decode_head.input_conv.0.weight",
               "decode_head.upsample_layers.2.convolution.bias": "decode_head.upsample_blocks.2.0.bias",
               "decode_head.predictor.weight": "decode_head.conv_normal.weight"},
    "matting": {"decode_head.upsample_layers.0.convolution.weight": "decode_head.upsample_blocks.0.0.weight",
                "decode_head.predictor.weight": "decode_head.conv_matting.weight"},
    "pointmap": {"decode_head.predictor.weight": "decode_head.conv_pointmap.weight",
                 "scale_head.conv_layers.1.convolution.weight": "decode_head.scale_conv_layers.3.weight",
                 "scale_head.predictor.block1.layers.0.weight": "decode_head.scale_final_layer.1.weight",
                 "scale_head.predictor.block2.layers.0.bias": "decode_head.scale_final_layer.3.bias",
                 "scale_head.predictor.proj.weight": "decode_head.scale_final_layer.5.weight"},
}


@pytest.mark.parametrize("task", list(HEAD_SAMPLES))
def test_head_roundtrip(official_dir, task):
    backbone = {f"backbone.{k}": v for k, v in load_file(str(official_dir / "backbone-tiny.safetensors")).items()}
    head = load_file(str(official_dir / f"{task}-tiny-head.safetensors"))
    official = {**backbone, **head}
    hf = to_transformers(official)
    for hf_key, official_key in HEAD_SAMPLES[task].items():
        assert torch.equal(hf[hf_key], official[official_key])
    assert not any(k.startswith("decode_head.scale_") for k in hf)
    assert infer_head_task({k: v for k, v in hf.items() if not k.startswith("model.")}) == task
    for hint in (None, task):
        back = to_official(hf, task=hint)
        assert set(back) == set(official) - {"backbone.rope_embed.periods"}
        assert all(torch.equal(back[k], official[k]) for k in back)


def test_albedo_has_no_transformers_layout(official_dir):
    head = load_file(str(official_dir / "albedo-tiny-head.safetensors"))
    with pytest.raises(CheckpointError, match="no transformers equivalent"):
        to_transformers(head)


def test_unknown_keys_pass_through_to_official():
    hf = {"embeddings.cls_token": torch.zeros(1, 1, 4), "something.else": torch.zeros(2)}
    assert set(to_official(hf)) == {"cls_token", "something.else"}


def test_half_of_gate_up_pair_is_an_error():
    hf = {"embeddings.cls_token": torch.zeros(1, 1, 4), "model.layer.0.mlp.gate_proj.weight": torch.zeros(8, 4)}
    with pytest.raises(CheckpointError, match="up_proj"):
        to_official(hf)


def test_inference_errors():
    sd = meta_state("tiny", False)
    with pytest.raises(CheckpointError, match="no 'cls_token'"):
        infer_backbone_config({k: v for k, v in sd.items() if k != "cls_token"})
    odd = dict(sd)
    odd["blocks.0.ffn.w3.weight"] = torch.empty(64, 200, device="meta")
    with pytest.raises(CheckpointError, match="ffn 200"):
        infer_backbone_config(odd)
    gap = {k: v for k, v in sd.items() if not k.startswith("blocks.3.")}
    with pytest.raises(CheckpointError, match=r"missing \[3\]"):
        infer_backbone_config(gap)
    tok = meta_state("tiny", True)
    short = {k: v for k, v in tok.items() if not k.startswith("tokenizer.blocks.1.")}
    with pytest.raises(CheckpointError, match="tokenizer has 1 blocks, not 2"):
        infer_backbone_config(short)
