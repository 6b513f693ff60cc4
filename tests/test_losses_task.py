"""build_task_loss: official default weights, target formats, perfect predictions, all-invalid batches, configs."""
import math

import numpy as np
import pytest
import torch

from sapiens2.training import build_task_loss, loss_config_from_dict
from sapiens2.training.losses import (OFFICIAL_SEG_CLASS_WEIGHTS, NormalLossConfig, PointmapLossConfig,
                                      SegLossConfig, canonical_pointmap_targets, encode_pose_targets, gradient_loss,
                                      masked_l1, normal_cosine_loss)
from sapiens2.tasks.pose.codec import encode_udp_heatmaps

G = torch.Generator().manual_seed(0)


def rand(*shape, requires_grad=False):
    return torch.rand(*shape, generator=G).requires_grad_(requires_grad)


def test_default_weights_are_the_official_ones():
    assert build_task_loss("pose").config.heatmap_weight == 10.0
    seg = build_task_loss("seg").config
    assert (seg.ce_weight, seg.dice_weight, seg.ignore_index) == (1.0, 1.0, 255)
    assert len(seg.class_weight) == 29 and seg.class_weight[0] == 0.1
    n = build_task_loss("normal").config
    assert (n.cosine_weight, n.l1_weight, n.grad_weight) == (10.0, 1.0, 10.0)
    p = build_task_loss("pointmap").config
    assert (p.l1_weight, p.multiscale_l1_weight, p.silog_weight, p.intrinsics_weight, p.shift_invariant_weight,
            p.normal_weight, p.scale_weight) == (2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0)
    a = build_task_loss("albedo").config
    assert (a.l1_weight, a.grad_weight, a.chroma_weight, a.low_freq_weight) == (2.0, 2.0, 1.0, 0.0)
    m = build_task_loss("matting").config
    assert (m.l1_weight, m.grad_weight, m.laplacian_weight) == (1.0, 1.0, 1.0)


def test_normal_total_is_weighted_sum_of_terms():
    pred, target = rand(2, 3, 6, 5, requires_grad=True), rand(2, 3, 6, 5) - 0.5
    mask = rand(2, 1, 6, 5) > 0.3
    total, terms = build_task_loss("normal")(pred, {"normal": target, "mask": mask})
    assert set(terms) == {"loss_cosine_sim", "loss_l1", "loss_grad"}
    expected = (10 * normal_cosine_loss(pred, target, mask) + masked_l1(pred, target, mask)
                + 10 * gradient_loss(pred, target, mask))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(pred.grad).all()


def test_dense_prediction_is_resized_to_target():
    pred = rand(1, 3, 4, 4)
    target = torch.nn.functional.interpolate(pred, size=(8, 8), mode="bilinear", align_corners=False)
    total, _ = build_task_loss("albedo")(pred, {"albedo": target})
    assert total.item() == pytest.approx(0.0, abs=1e-6)


def test_pose_with_udp_targets():
    kp = np.array([[[10.0, 20.0], [30.0, 5.0], [0.0, 0.0]]], np.float32)
    vis = np.array([[1.0, 1.0, 0.0]], np.float32)
    heatmaps, weights = encode_pose_targets(kp, vis, input_size=(48, 64), heatmap_size=(12, 16), sigma=2.0)
    ref_maps, ref_w = encode_udp_heatmaps(kp[0], (48, 64), (12, 16), 2.0, vis[0])
    assert torch.equal(heatmaps[0], torch.from_numpy(ref_maps)) and torch.equal(weights, torch.from_numpy(ref_w))
    loss = build_task_loss("pose", {"use_joint_weights": False})
    total, terms = loss(heatmaps.clone(), {"heatmaps": heatmaps, "keypoint_weights": weights})
    assert list(terms) == ["loss_kpt"] and total.item() == 0.0
    pred = torch.zeros_like(heatmaps, requires_grad=True)
    total, _ = loss(pred, {"heatmaps": heatmaps, "keypoint_weights": weights[:, None]})  # official (B, 1, K) too
    expected = 10 * (heatmaps[:, :2] ** 2).sum() / heatmaps.numel()  # keypoint 2 is unlabelled
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert torch.all(pred.grad[:, 2] == 0) and pred.grad[:, :2].abs().sum() > 0
    with pytest.raises(ValueError, match="use_joint_weights"):
        build_task_loss("pose")(pred, {"heatmaps": heatmaps})  # 3 channels are not the 308 official keypoints


def test_pose_joint_weights_apply_to_308():
    heat = torch.zeros(1, 308, 4, 3, requires_grad=True)
    total, _ = build_task_loss("pose")(heat, {"heatmaps": torch.ones(1, 308, 4, 3)})
    assert total.item() == pytest.approx(10.0)  # joint weights of the 308 set are all 1


def _pointmap_batch(b=2, h=8, w=6):
    depth = 2.0 + rand(b, 1, h, w)
    k = torch.tensor([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]).expand(b, 3, 3).clone()
    k[1, 0, 0] = k[1, 1, 1] = 90.0
    u = torch.arange(w).float().view(1, 1, 1, w)
    v = torch.arange(h).float().view(1, 1, h, 1)
    metric = torch.cat([(u - k[:, 0, 2].view(-1, 1, 1, 1)) * depth / k[:, 0, 0].view(-1, 1, 1, 1),
                        (v - k[:, 1, 2].view(-1, 1, 1, 1)) * depth / k[:, 1, 1].view(-1, 1, 1, 1), depth], 1)
    canonical, scale = canonical_pointmap_targets(metric, k, canonical_focal_length=768.0)
    mask = torch.ones(b, 1, h, w, dtype=torch.bool)
    mask[:, :, 0] = False
    return metric, canonical, scale, k, mask


def test_pointmap_perfect_prediction_and_terms():
    metric, canonical, scale, k, mask = _pointmap_batch()
    assert torch.allclose(scale, torch.tensor([768 / 60, 768 / 90]))
    assert torch.allclose(canonical, metric * scale.view(-1, 1, 1, 1))
    targets = {"pointmap": canonical, "mask": mask, "scale": scale, "K": k}
    loss = build_task_loss("pointmap")
    # Perfect inside the mask and 0 outside, like the (zeroed) ground truth: the bilinear upsampling of the
    # multiscale term blends neighbours across the mask edge, as in the official loss.
    perfect = canonical * mask
    total, terms = loss((perfect, scale.view(-1, 1).clone()), targets)
    assert set(terms) == {"loss_l1", "loss_multiscale_l1_2", "loss_silog", "loss_K_consistency",
                          "loss_shift_invariant", "loss_normal", "loss_scale_l1"}
    assert total.item() == pytest.approx(0.0, abs=1e-4)
    pred = (canonical * 1.1).requires_grad_(True)
    pred_scale = (scale.view(-1, 1) + 0.5).requires_grad_(True)
    total, terms = loss((pred, pred_scale), targets)
    assert terms["loss_scale_l1"].item() == pytest.approx(4 * 0.5, rel=1e-5)
    # A uniform scale error: SiLog = log(1.1) / sqrt(2), K consistency and normals unaffected.
    assert terms["loss_silog"].item() == pytest.approx(math.log(1.1) / math.sqrt(2), rel=1e-4)
    assert terms["loss_K_consistency"].item() == pytest.approx(0.0, abs=1e-4)
    assert terms["loss_normal"].item() == pytest.approx(0.0, abs=1e-4)
    total.backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(pred_scale.grad).all()


def test_pointmap_normalised_l1_matches_mean_depth_definition():
    metric, canonical, scale, k, mask = _pointmap_batch()
    pred = canonical + 0.3
    cfg = PointmapLossConfig(multiscale_l1_weight=0, silog_weight=0, intrinsics_weight=0, shift_invariant_weight=0,
                             normal_weight=0, scale_weight=0)
    _, terms = build_task_loss("pointmap", cfg)((pred, scale[:, None]), {"pointmap": canonical, "mask": mask})
    mean_depth = torch.stack([canonical[i, 2][mask[i, 0]].mean() for i in range(2)]).view(-1, 1, 1, 1)
    expected = 2 * masked_l1(pred / mean_depth, canonical / mean_depth, mask)
    assert terms["loss_l1"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(KeyError, match="'K'"):
        build_task_loss("pointmap")((pred, scale[:, None]), {"pointmap": canonical, "mask": mask, "scale": scale})


def test_seg_terms_and_class_weights():
    logits = rand(2, 29, 4, 4, requires_grad=True)
    labels = torch.randint(0, 29, (2, 4, 4), generator=G)
    labels[0, 0] = 255
    total, terms = build_task_loss("seg")(logits, {"seg": labels[:, None]})
    assert set(terms) == {"loss_ce", "loss_dice"} and torch.isfinite(total)
    total.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="class_weight has 29"):
        build_task_loss("seg")(rand(1, 5, 2, 2), {"seg": torch.zeros(1, 2, 2, dtype=torch.long)})
    custom = build_task_loss("seg", SegLossConfig(class_weight=None))
    total, _ = custom(torch.zeros(1, 5, 2, 2), {"seg": torch.ones(1, 2, 2, dtype=torch.long)})
    assert math.isfinite(total.item())


def test_matting_terms_and_masks():
    pred = rand(2, 4, 32, 32, requires_grad=True)
    targets = {"alpha": rand(2, 1, 32, 32), "foreground": rand(2, 3, 32, 32), "mask": rand(2, 1, 32, 32) > 0.5}
    total, terms = build_task_loss("matting")(pred, targets)
    assert set(terms) == {f"{n}_{s}" for n in ("loss_l1", "loss_grad", "loss_lap") for s in ("pha", "fgr")}
    total.backward()
    assert torch.isfinite(pred.grad).all()
    _, alpha_only = build_task_loss("matting")(pred.detach(), {"alpha": targets["alpha"]})
    assert set(alpha_only) == {"loss_l1_pha", "loss_grad_pha", "loss_lap_pha"}


@pytest.mark.parametrize("task", ["normal", "pointmap", "albedo", "seg", "pose", "matting"])
def test_all_invalid_batch_is_zero_with_finite_grad(task):
    b, h, w = 2, 32, 32
    mask = torch.zeros(b, 1, h, w, dtype=torch.bool)
    nan = torch.full((b, 3, h, w), float("nan"))
    if task == "pose":
        pred = rand(b, 5, 8, 6, requires_grad=True)
        out, targets = pred, {"heatmaps": torch.zeros(b, 5, 8, 6), "keypoint_weights": torch.zeros(b, 5)}
        loss = build_task_loss(task, {"use_joint_weights": False})
    elif task == "seg":
        pred = rand(b, 29, h, w, requires_grad=True)
        out, targets = pred, {"seg": torch.full((b, h, w), 255)}
        loss = build_task_loss(task)
    elif task == "pointmap":
        pred = rand(b, 3, h, w, requires_grad=True)
        out = (pred, torch.ones(b, 1))
        targets = {"pointmap": nan, "mask": mask, "scale": torch.ones(b), "K": torch.eye(3).expand(b, 3, 3)}
        loss = build_task_loss(task, {"scale_weight": 0.0})
    elif task == "matting":
        pred = rand(b, 4, h, w, requires_grad=True)
        out, targets = pred, {"alpha": rand(b, 1, h, w), "foreground": nan, "mask": mask}
        loss = build_task_loss(task, {"l1_weight": 1.0})
    else:
        pred = rand(b, 3, h, w, requires_grad=True)
        out, targets = pred, {task: nan, "mask": mask}
        loss = build_task_loss(task)
    total, terms = loss(out, targets)
    if task == "matting":  # alpha terms are never masked (official); the foreground ones are empty
        assert all(terms[k].item() == 0.0 for k in terms if k.endswith("_fgr"))
    else:
        assert total.item() == 0.0
    total.backward()
    assert torch.isfinite(pred.grad).all()


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="did you mean 'cosine_weight'"):
        loss_config_from_dict("normal", {"cosine_weigth": 1.0})
    with pytest.raises(ValueError, match="did you mean 'pointmap'"):
        build_task_loss("pointmaps")
    with pytest.raises(TypeError, match="NormalLossConfig"):
        build_task_loss("normal", SegLossConfig())
    with pytest.raises(ValueError, match="every normal loss weight is 0"):
        build_task_loss("normal", NormalLossConfig(0, 0, 0))(rand(1, 3, 2, 2), {"normal": rand(1, 3, 2, 2)})
    with pytest.raises(KeyError, match="'albedo'"):
        build_task_loss("albedo")(rand(1, 3, 2, 2), {"mask": None})
    cfg = loss_config_from_dict("seg", {"class_weight": [1, 2, 3]})
    assert cfg.class_weight == (1.0, 2.0, 3.0) and OFFICIAL_SEG_CLASS_WEIGHTS[1] == 10


def test_low_precision_outputs_are_scored_in_float32():
    pred, target = rand(2, 3, 8, 8), rand(2, 3, 8, 8)
    bf16 = pred.to(torch.bfloat16).requires_grad_(True)
    total, _ = build_task_loss("albedo")(bf16, {"albedo": target})
    ref, _ = build_task_loss("albedo")(bf16.detach().float(), {"albedo": target})
    assert total.dtype == torch.float32 and total.item() == pytest.approx(ref.item(), rel=1e-6)
    total.backward()
    assert bf16.grad.dtype == torch.bfloat16 and torch.isfinite(bf16.grad.float()).all()


def test_gradients_reach_a_model():
    conv = torch.nn.Conv2d(3, 3, 1)
    x = rand(2, 3, 6, 6)
    total, _ = build_task_loss("normal")(conv(x), {"normal": rand(2, 3, 6, 6) - 0.5, "mask": torch.ones(2, 6, 6)})
    total.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
