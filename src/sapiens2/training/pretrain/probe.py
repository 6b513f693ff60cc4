"""Linear probe of frozen backbone patch features on a dense labelling task (the 29-class part map by default).

The standard way to ask what pretraining taught a backbone: freeze it, fit only a per-patch linear classifier
(a 1x1 convolution) on its patch features, and score the predicted label map on held-out images. Here:

- features are extracted once (``extract_patch_features``) and cached, so fitting the probe is cheap;
- each channel is standardised with the training set's mean/std (a linear probe is scale sensitive only
  through its regulariser and optimiser, so this makes different backbones comparable);
- the probe's logits live on the patch grid and are bilinearly upsampled to the label resolution before the
  loss and the argmax, i.e. every pixel gets a prediction (upsampling and the linear map commute, so this is
  the same as a linear classifier on bilinearly upsampled features, at a fraction of the cost);
- the probe is fitted to convergence with full-batch L-BFGS on cross-entropy + a small L2 penalty, so the
  figure measures the features and not an optimiser's luck;
- the score is :class:`sapiens2.evaluation.SegMetrics` mIoU (percent, mean over classes that occur in the
  ground truth or the predictions of the evaluated images).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import TrainingConfigError
from ...evaluation import SegMetrics
from ...runtime import normalise_pixels

logger = logging.getLogger(__name__)

__all__ = ["LinearProbe", "ProbeResult", "extract_patch_features", "fit_linear_probe", "linear_probe_miou",
           "score_probe", "synthetic_part_set"]


def _person_crop(image: np.ndarray, seg: np.ndarray, box: np.ndarray, size: tuple[int, int],
                 margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) = ``size`` window centred on ``box`` (xywh), ``margin`` x its height (or width, whichever binds);
    pixels beyond the image are reflected in the picture and ``255`` (ignored) in the labels."""
    import cv2

    out_h, out_w = size
    x, y, w, h = (float(v) for v in box)
    crop_w = max(w * margin, h * margin * out_w / out_h)
    scale = out_w / crop_w
    affine = np.array([[scale, 0, out_w / 2 - (x + w / 2) * scale], [0, scale, out_h / 2 - (y + h / 2) * scale]],
                      np.float32)
    img = cv2.warpAffine(image, affine, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    lab = cv2.warpAffine(seg.astype(np.uint8), affine, (out_w, out_h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return img, lab


def synthetic_part_set(seed: int, count: int, size: tuple[int, int] = (128, 96), label_stride: int = 2,
                       margin: float = 1.15) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A probe set of ``count`` synthetic humans (stream ``seed``), each a ``size`` crop centred on one person
    (top-down, as the part-segmentation model sees people). Returns normalised images (N, 3, H, W), part labels
    (N, H/stride, W/stride) int64 sampled at the stride's pixel centres (255 = outside the picture), and the
    uint8 RGB crops (N, H, W, 3) (e.g. to write out for pretraining)."""
    from ...data.synth import generate_sample

    if count < 1 or label_stride < 1:
        raise TrainingConfigError(f"count and label_stride must be >= 1, got {count}, {label_stride}")
    images, labels = [], []
    for i in range(count):
        sample = generate_sample(seed, i, size[0], size[1], 1)
        img, lab = _person_crop(sample["image"], sample["seg"], sample["boxes"][0], size, margin)
        images.append(img)
        labels.append(lab[label_stride // 2::label_stride, label_stride // 2::label_stride])
    rgb = np.stack(images)
    normalised = normalise_pixels(torch.from_numpy(rgb).permute(0, 3, 1, 2).float())
    return normalised, torch.from_numpy(np.stack(labels).astype(np.int64)), rgb


@torch.no_grad()
def extract_patch_features(backbone: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Frozen features (N, C, h, w) float32 of normalised images (N, 3, H, W), in eval mode, on the backbone's
    device; returned on the CPU. The backbone's train/eval mode is restored afterwards."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise TrainingConfigError(f"expected normalised images (N, 3, H, W), got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise TrainingConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    try:
        chunks = [backbone(images[i:i + batch_size].to(device)).float().cpu()
                  for i in range(0, images.shape[0], batch_size)]
    finally:
        backbone.train(was_training)
    return torch.cat(chunks)


class LinearProbe(nn.Module):
    """Standardisation + 1x1 linear classifier on a patch grid, logits bilinearly upsampled to ``out_size``."""

    def __init__(self, in_channels: int, num_classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).clone())
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.zeros_(self.classifier.weight)  # convex problem: a fixed start makes the fit deterministic
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier((features - self.mean) / self.std)
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)


def upsampled_pixels(features: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                     chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly upsample ``features`` (N, C, h, w) to the labels' (N, H, W) size and return the labelled
    pixels as rows: (P, C) features and (P,) labels, ``ignore_index`` pixels dropped."""
    xs, ys = [], []
    for i in range(0, features.shape[0], chunk):
        lab = labels[i:i + chunk]
        up = F.interpolate(features[i:i + chunk].float(), size=lab.shape[-2:], mode="bilinear", align_corners=False)
        keep = lab != ignore_index
        xs.append(up.permute(0, 2, 3, 1)[keep])
        ys.append(lab[keep])
    return torch.cat(xs), torch.cat(ys)


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int = 29, l2: float = 1e-4,
                     max_iter: int = 100, max_pixels: int = 200_000, class_balance: float = 0.0,
                     ignore_index: int = 255, seed: int = 0) -> LinearProbe:
    """Fit a :class:`LinearProbe` on cached ``features`` (N, C, h, w) against ``labels`` (N, H, W) int64 by
    full-batch L-BFGS on mean per-pixel cross-entropy + ``l2`` * ||W||^2 (bias unpenalised).

    The loss is over the labelled pixels (features bilinearly upsampled to them), a seeded uniform sample of at
    most ``max_pixels`` of them, so the cost does not grow with the label resolution. ``class_balance`` b weights
    each class's pixels by frequency^-b (0: plain cross-entropy, 1: every class counts alike), normalised so the
    average pixel weight stays 1: with a dominant background, b > 0 keeps the probe from ignoring small parts."""
    if features.ndim != 4 or labels.ndim != 3 or features.shape[0] != labels.shape[0]:
        raise TrainingConfigError(f"need features (N, C, h, w) and labels (N, H, W) for the same N, got "
                         f"{tuple(features.shape)} and {tuple(labels.shape)}")
    x, y = upsampled_pixels(features, labels.long(), ignore_index)
    if y.numel() == 0:
        raise TrainingConfigError("no labelled pixels to fit the probe on (all are ignore_index)")
    if y.min() < 0 or y.max() >= num_classes:
        raise TrainingConfigError(f"labels must be in [0, {num_classes - 1}] or {ignore_index}")
    if y.numel() > max_pixels:
        pick = torch.randperm(y.numel(), generator=torch.Generator().manual_seed(seed))[:max_pixels]
        x, y = x[pick], y[pick]
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    probe = LinearProbe(features.shape[1], num_classes, mean, std).to(features.device)
    weight = probe.classifier.weight
    freq = torch.bincount(y, minlength=num_classes).float() / y.numel()
    class_w = torch.where(freq > 0, freq.clamp_min(1e-12) ** -class_balance, torch.zeros_like(freq))
    class_w = class_w / (freq * class_w).sum()
    opt = torch.optim.LBFGS(probe.classifier.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-7, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = F.linear(x, weight.flatten(1), probe.classifier.bias)
        loss = F.cross_entropy(logits, y, weight=class_w) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        final = opt.step(closure)
    logger.debug("linear probe fitted on %d pixels: loss %.4f", y.numel(), float(final.detach()))
    return probe


@dataclass
class ProbeResult:
    miou: float  # percent, SegMetrics mIoU on the evaluation images
    metrics: dict = field(default_factory=dict)  # the full SegMetrics report (mAcc, aAcc, per class)
    train_miou: float = float("nan")


@torch.no_grad()
def score_probe(probe: LinearProbe, features: torch.Tensor, labels: torch.Tensor, num_classes: int = 29,
                ignore_index: int = 255, batch_size: int = 64) -> dict:
    """The :class:`SegMetrics` report of ``probe`` on cached ``features`` (N, C, h, w) vs ``labels`` (N, H, W)."""
    metric = SegMetrics(num_classes, ignore_index=ignore_index)
    for i in range(0, features.shape[0], batch_size):
        gt = labels[i:i + batch_size]
        pred = probe(features[i:i + batch_size].float(), (gt.shape[-2], gt.shape[-1])).argmax(1)
        metric.update(pred.cpu().numpy().astype(np.int64), gt.cpu().numpy().astype(np.int64))
    return metric.compute()


def linear_probe_miou(backbone: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor,
                      test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int = 29,
                      l2: float = 1e-4, max_iter: int = 100, max_pixels: int = 200_000,
                      class_balance: float = 0.0, ignore_index: int = 255) -> ProbeResult:
    """Freeze ``backbone``, fit a linear probe on its patch features of the training images and return the
    mIoU on the test images. Images are normalised (N, 3, H, W); labels (N, H', W') int class ids at the
    resolution to score at (any size: the probe's logits are upsampled to it). See :func:`fit_linear_probe` for
    ``l2``, ``max_iter``, ``max_pixels`` and ``class_balance``."""
    for name, lab in (("train_labels", train_labels), ("test_labels", test_labels)):
        if lab.ndim != 3:
            raise TrainingConfigError(f"{name} must be (N, H, W) class ids, got shape {tuple(lab.shape)}")
    f_train = extract_patch_features(backbone, train_images)
    f_test = extract_patch_features(backbone, test_images)
    probe = fit_linear_probe(f_train, train_labels, num_classes, l2=l2, max_iter=max_iter, max_pixels=max_pixels,
                             class_balance=class_balance, ignore_index=ignore_index)
    report = score_probe(probe, f_test, test_labels, num_classes, ignore_index)
    train_report = score_probe(probe, f_train, train_labels, num_classes, ignore_index)
    return ProbeResult(miou=report["mIoU"], metrics=report, train_miou=train_report["mIoU"])
