"""Appearance-preserving views of one image: random resized crops and horizontal flips, nothing else.

No colour jitter, no grayscale, no blur, no solarisation: skin tone and lighting must survive pretraining
for albedo and normals downstream. Resizing is bilinear with antialiasing, whose filter weights are all
non-negative and sum to one, so every output pixel is a convex mix of input pixels of the same channel
(bicubic would overshoot and change colours at edges). Global views (the student's masked input and the
teacher's) are ``global_size``; optional multi-crop local views are ``local_size`` crops of a smaller area.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...errors import TrainingConfigError
from ...models.arch import PATCH_SIZE
from ...runtime import PIXEL_MEAN, PIXEL_STD

# The official pixel normalisation (RGB, 0-255 scale), as the fine-tuning and inference pipelines use.


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int
    flipped: bool


@dataclass
class ViewSpec:
    """Sizes are (H, W), multiples of the patch size; scales are fractions of the image area."""

    global_size: tuple[int, int] = (1024, 768)
    num_global: int = 2
    global_scale: tuple[float, float] = (0.32, 1.0)
    num_local: int = 0
    local_size: tuple[int, int] = (256, 192)
    local_scale: tuple[float, float] = (0.05, 0.32)
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)  # crop w/h relative to the output's w/h
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = field(default=PIXEL_MEAN)
    std: tuple[float, float, float] = field(default=PIXEL_STD)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("global_size", "local_size"):
            h, w = getattr(self, name)
            if h <= 0 or w <= 0 or h % PATCH_SIZE or w % PATCH_SIZE:
                raise TrainingConfigError(f"{name} {h}x{w} must be positive multiples of the patch size {PATCH_SIZE}")
        if self.num_global < 1 or self.num_local < 0:
            raise TrainingConfigError(f"need >= 1 global view and >= 0 local views, got {self.num_global}, "
                                      f"{self.num_local}")
        for name in ("global_scale", "local_scale", "aspect_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise TrainingConfigError(f"{name} must be 0 < lo <= hi, got {(lo, hi)}")
        if self.global_scale[1] > 1 or self.local_scale[1] > 1:
            raise TrainingConfigError("crop scales are area fractions and cannot exceed 1")


def sample_crop(height: int, width: int, out_size: tuple[int, int], scale: tuple[float, float],
                aspect_range: tuple[float, float], flip_prob: float, generator: torch.Generator) -> CropBox:
    """A RandomResizedCrop box (area fraction in ``scale``, aspect near the output's) plus a flip decision."""
    target_aspect = out_size[1] / out_size[0]
    area = height * width
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    rand = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    box = None
    for _ in range(10):
        a = area * (scale[0] + rand() * (scale[1] - scale[0]))
        r = target_aspect * math.exp(log_lo + rand() * (log_hi - log_lo))
        cw, ch = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(torch.randint(0, height - ch + 1, (), generator=generator))
            left = int(torch.randint(0, width - cw + 1, (), generator=generator))
            box = (top, left, ch, cw)
            break
    if box is None:  # fall back to the largest centred crop of the output's aspect
        ch, cw = (height, min(width, round(height * target_aspect))) if width / height > target_aspect else (
            min(height, round(width / target_aspect)), width)
        box = ((height - ch) // 2, (width - cw) // 2, ch, cw)
    return CropBox(*box, flipped=rand() < flip_prob)


def render_view(image: torch.Tensor, box: CropBox, out_size: tuple[int, int], mean: torch.Tensor,
                std: torch.Tensor) -> torch.Tensor:
    """Crop, resize (bilinear, antialiased), flip and normalise a (3, H, W) uint8/float image -> float32."""
    crop = image[:, box.top:box.top + box.height, box.left:box.left + box.width].to(torch.float32)
    view = F.interpolate(crop[None], size=out_size, mode="bilinear", align_corners=False, antialias=True)[0]
    if box.flipped:
        view = view.flip(-1)
    return (view - mean) / std


class ViewMaker:
    """Turns one image into ``num_global`` global and ``num_local`` local normalised views."""

    def __init__(self, spec: ViewSpec):
        spec.validate()
        self.spec = spec
        self._mean = torch.tensor(spec.mean, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(spec.std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, object]:
        """``image`` (3, H, W) RGB (uint8 0-255 or float on that scale) -> {"globals": [...], "locals": [...],
        "boxes": [CropBox, ...]} with views (3, h, w) float32."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise TrainingConfigError(f"expected a (3, H, W) RGB image, got shape {tuple(image.shape)}")
        s = self.spec
        h, w = image.shape[-2:]
        out: dict[str, object] = {"globals": [], "locals": [], "boxes": []}
        for kind, n, size, scale in (("globals", s.num_global, s.global_size, s.global_scale),
                                     ("locals", s.num_local, s.local_size, s.local_scale)):
            for _ in range(n):
                box = sample_crop(h, w, size, scale, s.aspect_range, s.flip_prob, generator)
                out[kind].append(render_view(image, box, size, self._mean, self._std))
                out["boxes"].append(box)
        return out

    def denormalise(self, view: torch.Tensor) -> torch.Tensor:
        """Back to the 0-255 RGB scale (for checks and previews)."""
        return view * self._std.to(view.device) + self._mean.to(view.device)
