"""Body-part segmentation pipeline (official ``vis_seg``): stretch the image to the model input (INTER_AREA when
the width shrinks, else INTER_CUBIC), logits bilinearly upsampled (align_corners=False) to the original size, argmax.

Large images: the upsampled logits are made a band of output rows at a time (:mod:`sapiens2.tasks.upsample`, bit
for bit equal to ``F.interpolate`` of the whole map) and reduced to class ids (first maximum wins, like
``torch.argmax``) before the next band, so the memory beyond the (H, W) uint8 result is a few MB whatever the size.
Where the band arithmetic is not verified for the device, classes are upsampled over the whole image in chunks
and reduced into a running max/argmax. Probabilities are made only on request.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.tasks.preprocess import stretch_resize
from sapiens2.tasks.results import SegResult
from sapiens2.tasks import upsample as banding
from sapiens2.tasks.upsample import (BandUpsampler, band_threads, band_workers, class_candidates, first_argmax,
                                    rows_per_band)

__all__ = ["seg_input", "upsampled_argmax", "coarse_argmax", "upsampled_softmax", "instance_masks", "seg_result",
           "UPSAMPLE_BUDGET"]

# Elements of upsampled logits handled at once (float32: 64M elements = 256 MB).
UPSAMPLE_BUDGET = 64 * 1024 * 1024
# Output pixels per source pixel from which class pruning (class_candidates) is worth its full pass over the logits.
PRUNE_AT_UPSAMPLING = 4
# Bands per thread below which one thread does them all (a thread's start costs more than a few bands).
MIN_BANDS_PER_WORKER = 16


def seg_input(rgb: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> the (input_h, input_w, 3) uint8 model input."""
    return stretch_resize(rgb, input_hw, cv2.INTER_CUBIC)


def _channel_chunks(channels: int, image_hw: tuple[int, int], budget: int) -> int:
    return max(1, min(channels, budget // max(1, image_hw[0] * image_hw[1])))


def _upsample(logits: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W) float32, bilinear, align_corners=False (identity when the size already matches)."""
    x = logits.float()
    if tuple(x.shape[-2:]) == tuple(image_hw):
        return x
    return F.interpolate(x[None], size=tuple(image_hw), mode="bilinear", align_corners=False)[0]


def upsampled_argmax(logits: torch.Tensor, image_hw: tuple[int, int], budget: int = UPSAMPLE_BUDGET) -> torch.Tensor:
    """argmax over classes of the logits (C, h, w) upsampled to image_hw -> (H, W) uint8 on the logits' device.

    Equal to ``F.interpolate(logits[None], image_hw, mode="bilinear").argmax(1)`` while holding at most
    ``budget`` upsampled elements at a time."""
    up = BandUpsampler(logits, image_hw)
    channels = logits.shape[0]
    resized = tuple(logits.shape[-2:]) != tuple(image_hw)
    # Bands where they are exact and either needed (the whole map would pass the budget) or free (no resize: a
    # banded argmax beats argmax(0) across the channel stride); otherwise one F.interpolate, the fastest path for
    # an ordinary photo (the W pass of a band is a gather, several times slower than the kernel's).
    if up.exact and (not resized or channels * image_hw[0] * image_hw[1] > budget):
        workers = band_workers(logits.device)
        with band_threads(logits.device):
            return _banded_argmax(up, min(budget, banding.BAND_ELEMENTS), workers)
    step = _channel_chunks(channels, image_hw, budget)
    if step >= channels:
        return first_argmax(_upsample(logits, image_hw))  # = argmax(0), 3x faster across the class stride
    best_val = best_idx = None
    for start in range(0, channels, step):
        up = _upsample(logits[start:start + step], image_hw)
        for offset in range(up.shape[0]):  # in place: no new full-size buffers per class
            plane = up[offset]
            if best_val is None:
                best_val = plane.clone()
                best_idx = torch.zeros(plane.shape, dtype=torch.uint8, device=plane.device)
                continue
            better = plane > best_val  # strict: on a tie the earlier class keeps it, as argmax does
            best_idx.masked_fill_(better, start + offset)
            torch.maximum(best_val, plane, out=best_val)
        del up
    return best_idx


def coarse_argmax(logits: torch.Tensor, image_hw: tuple[int, int], max_pixels: int) -> np.ndarray:
    """(H, W) uint8 class ids for a preview: :func:`upsampled_argmax` at ``image_hw`` shrunk (aspect kept) to at
    most ``max_pixels``, enlarged to ``image_hw`` nearest-neighbour. Live mode uses it with the seg input's pixel
    count: upsampling all 29 classes to every pixel of a 640x480 frame cost twice the seg student's forward, while
    the logits hold no detail finer than the input (the same ids except along class boundaries)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    scale = min(1.0, (max_pixels / max(1, h * w)) ** 0.5)
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    ids = upsampled_argmax(logits, small).cpu().numpy()
    if small == (h, w):
        return ids
    return cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)


def _banded_argmax(up: BandUpsampler, max_elements: int, workers: int = 1) -> torch.Tensor:
    """Bands of rows; in each only the classes that can be the maximum somewhere in it are upsampled
    (:func:`~sapiens2.tasks.upsample.class_candidates`; in increasing class order, so the first maximum still
    wins). A band where one class is left is filled without upsampling anything. ``workers``: threads, each
    taking a contiguous share of the bands (torch releases the GIL inside each op)."""
    height, width = up.out_hw
    # Pruning pays only where each source cell spreads over several output pixels; the seg head's logits are at
    # the model's input size (1024x768), so an ordinary photo is barely upsampled and every class is a candidate.
    source_pixels = up.maps.shape[1] * up.maps.shape[2]
    candidates = class_candidates(up.maps) if height * width >= PRUNE_AT_UPSAMPLING * source_pixels else None
    out = torch.empty((height, width), dtype=torch.uint8, device=up.maps.device)
    step = rows_per_band(up.channels, width, max_elements)
    tops = list(range(0, height, step))
    workers = max(1, min(workers, len(tops) // MIN_BANDS_PER_WORKER))
    if workers == 1:
        _argmax_bands(up, candidates, out, tops, step)
        return out
    share = -(-len(tops) // workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="s2-bands") as pool:
        for done in [pool.submit(_argmax_bands, up.fork(), candidates, out, tops[i:i + share], step)
                     for i in range(0, len(tops), share)]:
            done.result()
    return out


def _argmax_bands(up: BandUpsampler, candidates: torch.Tensor | None, out: torch.Tensor, tops: list[int],
                  step: int) -> None:
    height = up.out_hw[0]
    cells = up.rows_weights[0]  # the source row above each output row
    for top in tops:
        bottom = min(height, top + step)
        if candidates is None:
            first_argmax(up.rows(top, bottom), out=out[top:bottom])
            continue
        span = slice(int(cells[top]), int(cells[bottom - 1]) + 1)
        classes = torch.nonzero(candidates[:, span].any(dim=(1, 2))).flatten()
        if classes.numel() == 1:
            out[top:bottom] = int(classes[0])
        elif classes.numel() == up.channels:
            first_argmax(up.rows(top, bottom), out=out[top:bottom])
        else:
            first_argmax(up.rows(top, bottom, classes), out=out[top:bottom], classes=classes)


def upsampled_softmax(logits: torch.Tensor, image_hw: tuple[int, int], budget: int = UPSAMPLE_BUDGET) -> np.ndarray:
    """(C, H, W) float32 NumPy softmax over classes of the upsampled logits, filled chunk by chunk."""
    channels = logits.shape[0]
    out = np.empty((channels,) + tuple(image_hw), np.float32)
    up = BandUpsampler(logits, image_hw)
    if up.exact:  # each band upsampled straight into the result, then normalised there
        with band_threads(logits.device):
            for rows, band in up.bands(min(budget, banding.BAND_ELEMENTS)):
                out[:, rows] = band.cpu().numpy()
                _softmax_rows(out[:, rows])
        return out
    step = _channel_chunks(channels, image_hw, budget)
    for start in range(0, channels, step):
        out[start:start + step] = _upsample(logits[start:start + step], image_hw).cpu().numpy()
    rows = max(1, budget // max(1, channels * image_hw[1]))
    for top in range(0, image_hw[0], rows):  # in place, a band of rows at a time
        _softmax_rows(out[:, top:top + rows])
    return out


def _softmax_rows(band: np.ndarray) -> None:
    """Softmax over axis 0 of a (C, rows, W) band, in place."""
    band -= band.max(axis=0, keepdims=True)
    np.exp(band, out=band)
    band /= band.sum(axis=0, keepdims=True)


def instance_masks(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, H, W) bool: the foreground (class > 0) inside each xyxy person box (inclusive pixel bounds)."""
    h, w = mask.shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(boxes), h, w), bool)
    foreground = mask > 0
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        c0, r0 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        c1, r1 = min(w, int(np.ceil(x2)) + 1), min(h, int(np.ceil(y2)) + 1)
        if c1 > c0 and r1 > r0:
            out[i, r0:r1, c0:c1] = foreground[r0:r1, c0:c1]
    return out


def seg_result(logits: torch.Tensor, image_hw: tuple[int, int], *, probabilities: bool = False,
               person_boxes: np.ndarray | None = None) -> SegResult:
    """Model logits (29, h, w) of one image -> SegResult at the original (H, W)."""
    if logits.ndim != 3:
        raise ValueError(f"seg logits must be (C, h, w) for one image, got shape {tuple(logits.shape)}")
    mask = upsampled_argmax(logits, image_hw).cpu().numpy()
    probs = upsampled_softmax(logits, image_hw) if probabilities else None
    instances = instance_masks(mask, person_boxes) if person_boxes is not None else None
    return SegResult(mask=mask, probabilities=probs, instance_masks=instances)
