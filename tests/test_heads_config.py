"""Head configs per arch, shape-based task/config inference, and the errors on bad heads or sizes."""
import dataclasses

import pytest
import torch

from sapiens2.errors import ArchMismatchError, CheckpointError, InputSizeError
from sapiens2.models.heads import (ChannelRMSNorm, PointmapHeadConfig, default_head_config, head_config_from_dict,
                                   infer_head_config, infer_task)
from sapiens2.models.task_model import build_model, build_model_for_state_dict, infer_img_size

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting")


def meta_state_dict(task, arch, **kwargs):
    return build_model(task, arch, device="meta", **kwargs).state_dict()


@pytest.mark.parametrize("arch", ("sapiens2_tiny", "sapiens2_0.1b", "sapiens2_0.8b", "sapiens2_1b", "sapiens2_5b"))
@pytest.mark.parametrize("task", TASKS)
def test_infer_task_and_head_config_round_trip(task, arch):
    model = build_model(task, arch, device="meta")
    state = model.state_dict()
    assert infer_task(state) == task
    assert infer_head_config(task, state) == model.head_config
    assert infer_img_size(task, model.head_config) == (1024, 768)


def test_official_layouts_for_other_sizes():
    # facebookresearch/sapiens2 configs/ (1024x768)
    pose_1b = default_head_config("pose", "1b")
    assert pose_1b.deconv_out_channels == (1536, 1024) and pose_1b.conv_out_channels == (768, 512, 256)
    assert default_head_config("pose", "5b").deconv_out_channels == (1024, 768)
    assert default_head_config("seg", "5b").deconv_out_channels == (512, 256, 128, 64)
    normal_5b = default_head_config("normal", "5b")
    assert normal_5b.upsample_channels == (1536, 768, 512, 256) and normal_5b.conv_out_channels == (128, 64, 32)
    assert default_head_config("albedo", "5b").conv_out_channels == (64, 32, 16)
    pm_5b = default_head_config("pointmap", "5b")
    assert pm_5b.upsample_channels == (1536, 768, 768, 768) and pm_5b.in_channels == 2432
    # The scale MLP input follows img_size: 128 channels x 8x6 cells at 1024x768.
    model = build_model("pointmap", "0.8b", device="meta")
    assert model.head_config.scale_final_layer == (6144, 512, 128, 1)
    assert model.decode_head.scale_final_layer[1].in_features == 6144


def test_pointmap_img_size_is_recovered_from_scale_mlp():
    state = meta_state_dict("pointmap", "0.4b")
    config = infer_head_config("pointmap", state)
    assert config.scale_in_features == 6144
    assert infer_img_size("pointmap", config, default=(512, 384)) == (1024, 768)
    # The fixture's tiny head (32 = 8 channels x 2x2 cells) was made at 256x192.
    tiny = head_config_from_dict("pointmap", {"scale_final_layer": [32, 16, 8, 1]},
                                 base=default_head_config("pointmap", "tiny"))
    assert infer_img_size("pointmap", tiny) == (256, 192)
    assert infer_img_size("seg", default_head_config("seg", "tiny"), default=(640, 480)) == (640, 480)
    with pytest.raises(ValueError, match="6144"):
        build_model("pointmap", "0.4b", img_size=(512, 384), head_config=config, device="meta")


def test_model_for_state_dict_fits_keys_and_size():
    state = meta_state_dict("pointmap", "0.4b")
    model = build_model_for_state_dict(state, "0.4b", device="meta")
    assert model.task == "pointmap" and model.img_size == (1024, 768)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    with pytest.raises(CheckpointError, match="holds a pointmap head, not a normal head"):
        build_model_for_state_dict(state, "0.4b", task="normal", device="meta")


def test_pointmap_rejects_input_of_another_size_before_the_backbone():
    model = build_model("pointmap", "tiny", img_size=(256, 192)).eval()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(InputSizeError, match="512x384"):
        model(torch.zeros(1, 3, 512, 384))
    assert not calls


def test_dict_head_config_overrides_defaults_and_rejects_unknown_keys():
    model = build_model("seg", "tiny", img_size=(64, 48), head_config={"num_classes": 5}, device="meta")
    assert model.decode_head.conv_seg.out_channels == 5
    assert model.head_config.deconv_out_channels == default_head_config("seg", "tiny").deconv_out_channels
    with pytest.raises(ValueError, match="unknown seg head config key 'upsample_channels'"):
        build_model("seg", "tiny", head_config={"upsample_channels": [8]}, device="meta")
    with pytest.raises(ValueError, match="unknown task"):
        build_model("depthmap", "tiny", device="meta")


def test_head_for_another_backbone_width_is_refused():
    config = default_head_config("normal", "0.4b")
    with pytest.raises(ArchMismatchError, match="1024 input channels"):
        build_model("normal", "1b", head_config=config, device="meta")


def test_backbone_only_state_dict_raises():
    state = {k.removeprefix("backbone."): v for k, v in meta_state_dict("seg", "tiny").items()
             if k.startswith("backbone.")}
    with pytest.raises(CheckpointError, match="backbone-only"):
        infer_task(state)


def test_head_with_two_predictors_raises():
    state = {**meta_state_dict("seg", "tiny"), "decode_head.conv_pose.weight": torch.empty(308, 16, 1, 1)}
    with pytest.raises(CheckpointError, match="unrecognised task head"):
        infer_task(state)


def test_unknown_predictor_raises():
    state = {k.replace("conv_normal", "conv_depth"): v for k, v in meta_state_dict("normal", "tiny").items()}
    with pytest.raises(CheckpointError, match=r"found \['conv_depth.weight'\]"):
        infer_task(state)


def test_transformers_layout_head_raises():
    state = {k.replace("conv_seg", "predictor"): v for k, v in meta_state_dict("seg", "tiny").items()}
    with pytest.raises(CheckpointError, match="transformers"):
        infer_task(state)


def test_albedo_norm_weights_under_a_normal_head_raise():
    state = {k.replace("conv_albedo", "conv_normal"): v for k, v in meta_state_dict("albedo", "tiny").items()}
    assert infer_task(state) == "normal"
    with pytest.raises(ArchMismatchError) as info:
        infer_head_config("normal", state)
    assert "decode_head.input_conv.1.norm.weight" in info.value.unexpected


def test_missing_and_misshapen_head_tensors_raise():
    state = meta_state_dict("pose", "tiny")
    no_bias = {k: v for k, v in state.items() if k != "decode_head.conv_layers.3.bias"}
    with pytest.raises(ArchMismatchError) as info:
        infer_head_config("pose", no_bias)
    assert info.value.missing == ["decode_head.conv_layers.3.bias"]
    gap = {k.replace("conv_layers.3.", "conv_layers.4."): v for k, v in state.items()}
    with pytest.raises(CheckpointError, match="indices"):
        infer_head_config("pose", gap)
    pm = dict(meta_state_dict("pointmap", "tiny"))
    pm["decode_head.scale_final_layer.5.weight"] = torch.empty(2, 8, device="meta")
    pm["decode_head.scale_final_layer.5.bias"] = torch.empty(2, device="meta")
    with pytest.raises(CheckpointError, match="expected 1"):
        infer_head_config("pointmap", pm)


def test_channel_rms_norm_normalises_each_pixel_over_channels():
    torch.manual_seed(0)
    norm = ChannelRMSNorm(6)
    with torch.no_grad():
        norm.norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(2, 6, 5, 4)
    expected = x / torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6) * torch.arange(1.0, 7.0).view(1, 6, 1, 1)
    torch.testing.assert_close(norm(x), expected)


def test_bfloat16_model_runs_and_keeps_dtype():
    torch.manual_seed(0)
    model = build_model("pose", "tiny", img_size=(64, 48), dtype=torch.bfloat16).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 48, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 308, 16, 12)
    assert torch.isfinite(out.float()).all()


def test_configs_are_frozen_and_validated():
    config = default_head_config("pointmap", "0.4b")
    assert isinstance(config, PointmapHeadConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.in_channels = 3
    with pytest.raises(ValueError, match="same length"):
        dataclasses.replace(config, conv_out_channels=(8, 8))


def test_pointmap_too_small_for_scale_branch_fails_at_build_time():
    import sapiens2
    from sapiens2.errors import InputSizeError

    with pytest.raises(InputSizeError, match="too small for the pointmap scale branch"):
        sapiens2.build_model("pointmap", "sapiens2_tiny", img_size=(64, 48))
    sapiens2.build_model("pointmap", "sapiens2_tiny", img_size=(256, 192), device="meta")  # the fixture size works
