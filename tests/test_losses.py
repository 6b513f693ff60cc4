"""Each training loss on tiny hand-made tensors with values worked out by hand; masks, gradients, all-invalid."""
import math

import pytest
import torch
import torch.nn.functional as F

from sapiens2.training.losses import (chromaticity_l1, dice_loss, gradient_loss, intrinsics_consistency_loss,
                                      keypoint_heatmap_mse, laplacian_pyramid_l1, low_frequency_l1, masked_l1,
                                      matting_l1, multiscale_l1, normal_cosine_loss, pointmap_normal_loss, scale_l1,
                                      seg_cross_entropy, shift_invariant_l1, silog_loss, sobel_gradient_l1)


def leaf(x):
    return x.clone().float().requires_grad_(True)


def test_masked_l1_hand_value_mask_and_grad():
    pred = leaf(torch.zeros(1, 3, 2, 2))
    target = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone()
    mask = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)  # (B, H, W) form
    target[:, :, :, 1] = float("nan")  # garbage where there is no ground truth must not matter
    loss = masked_l1(pred, target, mask)
    assert loss.item() == pytest.approx(6.0)  # (1 + 2 + 3) per valid pixel, channels summed, 2 pixels averaged
    loss.backward()
    assert torch.allclose(pred.grad[0, :, :, 0], torch.full((3, 2), -0.5))
    assert torch.all(pred.grad[0, :, :, 1] == 0)


def test_multiscale_l1_of_constant_error_and_scale_one_is_l1():
    pred, target = torch.full((1, 2, 3, 3), 0.5), torch.zeros(1, 2, 3, 3)
    assert multiscale_l1(pred, target).item() == pytest.approx(1.0)  # 0.5 per channel, 2 channels
    g = torch.Generator().manual_seed(0)
    p, t = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    m = torch.rand(2, 1, 4, 5, generator=g) > 0.4
    assert multiscale_l1(p, t, m, scale_factor=1.0).item() == pytest.approx(masked_l1(p, t, m).item(), rel=1e-6)
    with pytest.raises(ValueError, match="mode"):
        multiscale_l1(p, t, m, mode="nearest")


def test_normal_cosine_known_angles():
    pred = torch.zeros(1, 3, 1, 3)
    target = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0], target[0, :, 0, 0] = torch.tensor([1.0, 0, 0]), torch.tensor([0, 2.0, 0])  # 90 deg: 1
    pred[0, :, 0, 1], target[0, :, 0, 1] = torch.tensor([0, 0, 3.0]), torch.tensor([0, 0, 1.0])  # same: 0
    pred[0, :, 0, 2], target[0, :, 0, 2] = torch.tensor([1.0, 0, 0]), torch.tensor([-1.0, 0, 0])  # opposite: 2
    assert normal_cosine_loss(pred, target).item() == pytest.approx(1.0)  # (1 + 0 + 2) / 3
    mask = torch.tensor([[[[1, 1, 0]]]])
    assert normal_cosine_loss(pred, target, mask).item() == pytest.approx(0.5)


def test_gradient_loss_hand_values():
    pred = torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]).view(1, 1, 2, 3)
    target = torch.zeros_like(pred)
    # x differences 1, 2 per row (squared 1, 4), y differences all 0.
    assert gradient_loss(pred, target).item() == pytest.approx(2.5)
    assert gradient_loss(pred, target, average_axes=True).item() == pytest.approx(1.25)
    assert gradient_loss(pred, target, penalty="absolute").item() == pytest.approx(1.5)
    mask = torch.tensor([[[[1, 1, 1], [1, 1, 0]]]])  # drops the second pair of row 1
    assert gradient_loss(pred, target, mask).item() == pytest.approx((1 + 4 + 1) / 3)


def test_silog_uniform_scale_and_empty_sample():
    target = torch.rand(2, 1, 3, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    pred = leaf(2.0 * target)
    mask = torch.ones(2, 1, 3, 4)
    mask[1] = 0  # the second sample has no ground truth: it contributes 0 but still counts in the batch mean
    loss = silog_loss(pred, target, mask)
    # d = -log 2 everywhere: sqrt(log^2 2 - 0.5 log^2 2) = log 2 / sqrt 2 for sample 0, then /2 over the batch.
    assert loss.item() == pytest.approx(math.log(2) / math.sqrt(2) / 2, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and torch.all(pred.grad[1] == 0)
    perfect = leaf(target)
    silog_loss(perfect, target).backward()  # sqrt at 0 must not give NaN gradients
    assert torch.isfinite(perfect.grad).all()


def _pointmap_from_depth(depth, k):
    b, _, h, w = depth.shape
    u = torch.arange(w).view(1, 1, 1, w).float()
    v = torch.arange(h).view(1, 1, h, 1).float()
    x = (u - k[:, 0, 2].view(-1, 1, 1, 1)) * depth / k[:, 0, 0].view(-1, 1, 1, 1)
    y = (v - k[:, 1, 2].view(-1, 1, 1, 1)) * depth / k[:, 1, 1].view(-1, 1, 1, 1)
    return torch.cat([x, y, depth], 1)


def test_intrinsics_consistency_zero_when_consistent_and_offset_otherwise():
    k = torch.tensor([[[50.0, 0, 2.5], [0, 40.0, 1.5], [0, 0, 1]]])
    depth = torch.rand(1, 1, 3, 5, generator=torch.Generator().manual_seed(2)) + 1.0
    pm = _pointmap_from_depth(depth, k)
    assert intrinsics_consistency_loss(pm, k).item() == pytest.approx(0.0, abs=1e-6)
    shifted = pm.clone()
    shifted[:, 0] += 0.5
    shifted[:, 1] -= 0.25
    assert intrinsics_consistency_loss(shifted, k).item() == pytest.approx(0.75, rel=1e-5)
    with pytest.raises(ValueError, match="intrinsics"):
        intrinsics_consistency_loss(pm, k[0])


def test_shift_invariant_l1_ignores_translation():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 4, 4, generator=g)
    mask = torch.rand(2, 1, 4, 4, generator=g) > 0.3
    pred = target + torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    assert shift_invariant_l1(pred, target, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_l1(pred, target, mask).item() == pytest.approx(3.5, rel=1e-5)


def test_pointmap_normal_loss_tilted_plane():
    h, w = 4, 5
    u = torch.arange(w).float().view(1, 1, 1, w).expand(1, 1, h, w)
    v = torch.arange(h).float().view(1, 1, h, 1).expand(1, 1, h, w)
    target = torch.cat([u, v, torch.ones(1, 1, h, w)], 1)  # plane z = 1: normal (0, 0, 1)
    pred = torch.cat([u, v, 1 + u], 1)  # z = 1 + u: normal (-1, 0, 1) / sqrt 2
    assert pointmap_normal_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-6)
    r = math.sqrt(2)
    expected = (1 - 1 / r) + (1 / r + 0 + (1 - 1 / r)) / 3  # (1 - cos) + mean_c |n_pred - n_target|
    assert pointmap_normal_loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    # The direction does not depend on an isotropic scale.
    scale = torch.tensor([2.0])
    assert pointmap_normal_loss(pred * 2, target * 2, scale=scale).item() == pytest.approx(expected, rel=1e-5)


def test_scale_l1_and_sample_mask():
    pred = leaf(torch.tensor([[1.0], [2.0], [5.0]]))
    target = torch.tensor([1.5, 2.0, float("nan")])
    assert scale_l1(pred, target, valid=torch.tensor([1, 1, 0])).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="pred_scale"):
        scale_l1(pred, torch.ones(3, 2))


def test_chromaticity_is_brightness_invariant():
    target = torch.tensor([0.2, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert chromaticity_l1(2 * target, target).item() == pytest.approx(0.0, abs=1e-5)
    red = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    green = torch.tensor([0, 1.0, 0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert chromaticity_l1(red, green).item() == pytest.approx(2.0, rel=1e-5)


def test_low_frequency_l1_constant_images():
    pred, target = torch.full((1, 3, 8, 8), 0.7), torch.full((1, 3, 8, 8), 0.2)
    assert low_frequency_l1(pred, target, down_sample=4).item() == pytest.approx(1.5, rel=1e-4)
    g = torch.Generator().manual_seed(4)
    p, t = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g)
    assert low_frequency_l1(p, t, down_sample=1).item() == pytest.approx(masked_l1(p, t).item())
    with pytest.raises(ValueError, match="down_sample"):
        low_frequency_l1(p, t, down_sample=32)


def test_heatmap_mse_keypoint_weights():
    pred, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    assert keypoint_heatmap_mse(pred, target, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)
    assert keypoint_heatmap_mse(pred, target, torch.tensor([[1.0, 0.5]])).item() == pytest.approx(0.75)
    assert keypoint_heatmap_mse(pred, target).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="keypoint_weights"):
        keypoint_heatmap_mse(pred, target, torch.ones(1, 3))


def test_seg_cross_entropy_weighted_over_all_pixels():
    logits = leaf(torch.zeros(1, 2, 2, 2))  # CE = log 2 everywhere
    labels = torch.tensor([[[0, 1], [255, 1]]])
    loss = seg_cross_entropy(logits, labels, class_weight=(0.5, 2.0))
    assert loss.item() == pytest.approx((0.5 + 2 + 2) * math.log(2) / 4)
    loss.backward()
    assert torch.all(logits.grad[0, :, 1, 0] == 0)  # the ignored pixel gets no gradient
    with pytest.raises(ValueError, match="outside"):
        seg_cross_entropy(logits, torch.tensor([[[0, 7], [1, 1]]]))
    with pytest.raises(ValueError, match="class_weight"):
        seg_cross_entropy(logits, labels, class_weight=(1.0, 1.0, 1.0))


def test_dice_uniform_prediction_hand_value_and_perfect():
    labels = torch.tensor([[[1, 1], [2, 0]]])
    eps = 1e-3
    dice1 = (2 * (2 / 3) + eps) / (4 / 9 + 2 + eps)  # class 1: two pixels, p = 1/3 on 4 pixels
    dice2 = (2 * (1 / 3) + eps) / (4 / 9 + 1 + eps)
    expected = 1 - (dice1 + dice2) / 2  # background left out
    assert dice_loss(torch.zeros(1, 3, 2, 2), labels).item() == pytest.approx(expected, rel=1e-6)
    # An ignored pixel drops out of both sums: class 1 keeps one pixel, three pixels remain.
    ignored = torch.tensor([[[1, 255], [2, 0]]])
    d1 = (2 / 3 + eps) / (3 / 9 + 1 + eps)
    d2 = (2 / 3 + eps) / (3 / 9 + 1 + eps)
    assert dice_loss(torch.zeros(1, 3, 2, 2), ignored).item() == pytest.approx(1 - (d1 + d2) / 2, rel=1e-6)
    perfect = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 100
    assert dice_loss(perfect, labels).item() == pytest.approx(0.0, abs=1e-6)
    # A sample with only background / ignored labels contributes 0 but counts in the batch mean.
    two = torch.cat([labels, torch.zeros_like(labels)])
    assert dice_loss(torch.zeros(2, 3, 2, 2), two).item() == pytest.approx(expected / 2, rel=1e-6)


def test_matting_losses_hand_values():
    pred, target = torch.full((1, 1, 2, 2), 0.75), torch.full((1, 1, 2, 2), 0.25)
    mask = torch.tensor([[[[1, 0], [0, 0]]]])
    assert matting_l1(pred, target).item() == pytest.approx(0.5)
    assert matting_l1(pred, target, mask).item() == pytest.approx(0.125)  # mean over all elements (official)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    # Sobel x on a unit ramp = (1 + 2 + 1) * 2 = 8 inside; reflect padding makes the two edge columns 0.
    expected = 6 * (math.sqrt(64 + 1e-6) - math.sqrt(1e-6)) / 12
    assert sobel_gradient_l1(ramp, torch.zeros_like(ramp)).item() == pytest.approx(expected, rel=1e-5)
    # Constant images have no band-pass content: only the top (residual) level, weight 2**(L-1), remains.
    c1, c2 = torch.full((1, 1, 8, 8), 0.9), torch.full((1, 1, 8, 8), 0.4)
    assert laplacian_pyramid_l1(c1, c2, levels=3).item() == pytest.approx(4 * 0.5 / 3, rel=1e-5)
    assert laplacian_pyramid_l1(c1, c2, levels=1).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs H, W"):
        laplacian_pyramid_l1(c1, c2, levels=5)


DENSE = {
    "masked_l1": lambda p, t, m: masked_l1(p, t, m),
    "multiscale_l1": lambda p, t, m: multiscale_l1(p, t, m),
    "cosine": lambda p, t, m: normal_cosine_loss(p, t, m),
    "gradient": lambda p, t, m: gradient_loss(p, t, m),
    "silog": lambda p, t, m: silog_loss(p[:, 2:], t[:, 2:], m),
    "intrinsics": lambda p, t, m: intrinsics_consistency_loss(p, torch.eye(3).expand(p.shape[0], 3, 3), m),
    "shift_invariant": lambda p, t, m: shift_invariant_l1(p, t, m),
    "pointmap_normal": lambda p, t, m: pointmap_normal_loss(p, t, m, torch.ones(p.shape[0])),
    "chroma": lambda p, t, m: chromaticity_l1(p, t, m),
    "low_freq": lambda p, t, m: low_frequency_l1(p, t, m, down_sample=2),
    "matting_l1": lambda p, t, m: matting_l1(p, t, m),
    "sobel": lambda p, t, m: sobel_gradient_l1(p, t, m),
    "laplacian": lambda p, t, m: laplacian_pyramid_l1(p, t, m, levels=2),
}


@pytest.mark.parametrize("name", sorted(DENSE))
def test_dense_losses_mask_grad_and_all_invalid(name):
    fn = DENSE[name]
    g = torch.Generator().manual_seed(5)
    target = torch.rand(2, 3, 6, 6, generator=g) + 0.5
    pred = leaf(torch.rand(2, 3, 6, 6, generator=g) + 0.5)
    mask = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    mask[:, :, 1:5, 1:5] = True
    loss = fn(pred, target, mask)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # Masks respected: garbage targets outside the mask do not change the value.
    garbage = target.clone()
    garbage[~mask.expand_as(garbage)] = float("nan")
    assert fn(pred, garbage, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    # All-invalid batch: exactly 0, differentiable, finite gradients.
    pred2 = leaf(pred.detach())
    zero = fn(pred2, garbage, torch.zeros_like(mask))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.isfinite(pred2.grad).all() and torch.all(pred2.grad == 0)


def test_seg_and_pose_losses_all_invalid():
    logits = leaf(torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(6)))
    labels = torch.full((2, 3, 3), 255)
    total = seg_cross_entropy(logits, labels) + dice_loss(logits, labels)
    assert total.item() == 0.0
    total.backward()
    assert torch.isfinite(logits.grad).all()
    heat = leaf(torch.randn(2, 3, 4, 4))
    target = torch.full((2, 3, 4, 4), float("nan"))
    loss = keypoint_heatmap_mse(heat, target, torch.zeros(2, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(heat.grad == 0)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="same shape"):
        masked_l1(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 3))
    with pytest.raises(ValueError, match="valid_mask"):
        masked_l1(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        normal_cosine_loss(torch.zeros(3, 2, 2), torch.zeros(3, 2, 2))
