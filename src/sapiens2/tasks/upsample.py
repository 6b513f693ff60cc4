"""Bilinear upsampling (``align_corners=False``) of model outputs to the image size, one band of output rows at a
time, bit for bit equal to ``F.interpolate`` of the whole map.

Why: ``F.interpolate`` makes the whole (C, H, W) float32 result at once. For a 24-megapixel photo and the 29 seg
classes that is 2.8 GB, for a 20000x20000 image 46 GB, while what is written is one byte per pixel. Here each band
of output rows is made from the few source rows it needs and reduced (argmax, normalisation, ...) before the next.

A band cannot be had by calling ``F.interpolate`` on a slice: the source coordinate of an output row depends on
its index in the whole output, in float32. So the arithmetic of PyTorch's CPU kernel is reproduced exactly:

- per axis, ``scale = float32(in) / out`` and the source coordinate ``fma(scale, i + 0.5, -0.5)``, rounded once to
  float32 and clamped at 0; ``i0 = min(floor, in - 1)``, ``i1 = i0 + 1`` (``i0`` on the last source line),
  ``lambda = src - i0``, weights ``(1 - lambda, lambda)``; an axis whose size does not change is the identity;
- along W: ``F.interpolate`` itself, on just the source rows of the band with their height unchanged (the
  identity along H), so the W pass is the kernel's own;
- along H: ``fma(T[i0], 1 - lambda, T[i1] * lambda)``; ``torch.addcmul`` is that fused multiply-add.

``F.interpolate``'s own CPU result depends on the thread count: on one thread some outputs round an ulp apart
(e.g. (3, 7, 5) -> (230, 31)). The bands reproduce the multi-threaded kernel bit for bit, and the one-thread
kernel to within that ulp. That this holds is checked once per device type on probes of odd sizes; where it
does not (another kernel, e.g. on CUDA), :meth:`BandUpsampler.exact` is False and callers use their whole-map path.
Outputs whose height + width is at most 128 take ``F.interpolate`` directly (PyTorch uses another kernel for
them, and they are tiny).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["BAND_ELEMENTS", "BandUpsampler", "axis_weights", "band_threads", "band_workers", "class_candidates", "first_argmax",
           "rows_per_band"]

log = logging.getLogger(__name__)

#: Upsampled elements per band (float32: 4 MB; a band's temporaries are a few times this). 16 MB bands were up to
#: 25% faster on the development machine but added about 60 MB to the peak (24 MP seg: 0.63 GB against 0.59 GB).
BAND_ELEMENTS = 1024 * 1024
_SMALL_OUTPUT = 128  # height + width at or below which PyTorch's CPU kernel is the vectorised one
_VERIFIED: dict[str, bool] = {}


@contextlib.contextmanager
def band_threads(device: torch.device):
    """One intra-op thread on the CPU while bands are processed. A band loop is thousands of element-wise ops of a
    few MB each; splitting every one across OpenMP threads costs a fork/join per op, and where the cores are shared
    with other work (a busy machine, a VM) each join waits for a descheduled thread: measured 5-8x slower with 2
    threads than with 1 on the 2-core development VM (24 MP seg: 20-34 s against 3.4-4.4 s). Restored after."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def band_workers(device: torch.device) -> int:
    """Threads for a band loop on ``device``: on the CPU the intra-op thread count before :func:`band_threads`
    (at most 4: bands are memory-bound), elsewhere 1 (one device queue). Threads that each run whole bands share
    the cores without the per-op fork/join that makes intra-op threads slow there."""
    return max(1, min(4, torch.get_num_threads())) if device.type == "cpu" else 1


def rows_per_band(channels: int, width: int, max_elements: int = BAND_ELEMENTS) -> int:
    """Rows of a (channels, rows, width) band holding at most ``max_elements`` (at least one row)."""
    return max(1, int(max_elements) // max(1, channels * width))


def axis_weights(n_in: int, n_out: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(i0, i1, w0, w1) of PyTorch's bilinear ``align_corners=False`` for one axis: output ``i`` is
    ``w0[i] * x[i0[i]] + w1[i] * x[i1[i]]``; int64 indices, float32 weights."""
    if n_in == n_out:
        index = torch.arange(n_out, device=device)
        return index, index, torch.ones(n_out, device=device), torch.zeros(n_out, device=device)
    scale = torch.tensor(float(n_in), dtype=torch.float32) / float(n_out)
    # scale * (i + 0.5) is exact in float64 (24-bit times < 32-bit), so one rounding to float32 = the kernel's fma
    src = (scale.double() * (torch.arange(n_out, dtype=torch.float64) + 0.5) - 0.5).float().clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    lam = (src - i0.float()).clamp(0, 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    return i0.to(device), i1.to(device), (1 - lam).to(device), lam.to(device)


class BandUpsampler:
    """Rows of ``F.interpolate(maps[None], out_hw, mode="bilinear", align_corners=False)[0]`` on demand.

    ``maps``: (C, h, w) on any device (computed in float32 there). :meth:`rows` gives rows [top, bottom) as a
    (C, bottom - top, W) float32 tensor; :meth:`bands` walks the whole output in bands of
    :func:`rows_per_band` rows. Only valid where :attr:`exact` (see the module doc)."""

    def __init__(self, maps: torch.Tensor, out_hw: tuple[int, int], *, verify: bool = True):
        self.maps = maps.float()
        self.out_hw = (int(out_hw[0]), int(out_hw[1]))
        c, h, w = self.maps.shape
        self.channels = c
        self._small = sum(self.out_hw) <= _SMALL_OUTPUT
        self._rows = axis_weights(h, self.out_hw[0], self.maps.device)
        self.rows_weights = self._rows  # (i0, i1, w0, w1) per output row
        self._cols = axis_weights(w, self.out_hw[1], self.maps.device)
        self.exact = self._small or not verify or _verified(self.maps.device)
        self._last_across: tuple | None = None

    def fork(self) -> "BandUpsampler":
        """A copy sharing the maps and weights with a cache of its own (for another thread)."""
        twin = copy.copy(self)
        twin._last_across = None
        return twin

    def full(self) -> torch.Tensor:
        """The whole (C, H, W) result at once (``F.interpolate``; the identity when the size matches)."""
        if tuple(self.maps.shape[-2:]) == self.out_hw:
            return self.maps
        return F.interpolate(self.maps[None], size=self.out_hw, mode="bilinear", align_corners=False)[0]

    def _across(self, first: int, last: int, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Source rows [first, last) interpolated along W: (C, last - first, W), ``fma(a, w0, b * w1)``.

        Made for every class a block of source rows at a time (about a band's worth, :data:`BAND_ELEMENTS`) and
        kept: consecutive bands share most of their source rows, so each source row is interpolated about once
        (a band recomputing its own 2-3 rows did it ~2.5x over at 24 MP). ``channels``: a copy of those only."""
        cached = self._last_across
        if cached is None or not (cached[0] <= first and last <= cached[1]):
            height = self.maps.shape[1]
            end = min(height, max(last, first + rows_per_band(self.channels, self.out_hw[1], BAND_ELEMENTS)))
            source = self.maps[:, first:end]
            if source.shape[-1] != self.out_hw[1]:
                if end - first + self.out_hw[1] > _SMALL_OUTPUT:  # the kernel itself, height unchanged: 4x faster
                    source = F.interpolate(source[None], size=(end - first, self.out_hw[1]), mode="bilinear",
                                           align_corners=False)[0]
                else:
                    i0, i1, w0, w1 = self._cols
                    source = torch.addcmul(source.index_select(2, i1) * w1, source.index_select(2, i0), w0)
            cached = self._last_across = (first, end, source)
        part = cached[2][:, first - cached[0]:last - cached[0]]
        return part if channels is None else part.index_select(0, channels)

    def rows(self, top: int, bottom: int, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Output rows [top, bottom): (C, bottom - top, W) float32 (only ``channels``, an index tensor, if given)."""
        if self._small:
            full = self.full()
            return full[:, top:bottom] if channels is None else full[channels, top:bottom]
        i0, i1, w0, w1 = (t[top:bottom] for t in self._rows)
        first = int(i0[0])
        across = self._across(first, int(i1[-1]) + 1, channels)
        if self.maps.shape[1] == self.out_hw[0]:
            return across
        out = torch.empty((across.shape[0], bottom - top, self.out_hw[1]), dtype=torch.float32, device=self.maps.device)
        # output rows sharing a source row pair broadcast that pair: fma(upper, w0, lower * w1), no gathers
        starts = [0] + [int(j) + 1 for j in torch.nonzero(i0[1:] != i0[:-1]).flatten().tolist()] + [len(i0)]
        for a, b in zip(starts[:-1], starts[1:]):
            upper = across[:, int(i0[a]) - first, None]
            lower = across[:, int(i1[a]) - first, None]
            torch.addcmul(lower * w1[a:b, None], upper, w0[a:b, None], out=out[:, a:b])
        return out

    def bands(self, max_elements: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
        """(row slice, (C, rows, W) float32) covering the output from the top."""
        height = self.out_hw[0]
        budget = BAND_ELEMENTS if max_elements is None else max_elements
        step = height if self._small else rows_per_band(self.channels, self.out_hw[1], budget)
        for top in range(0, height, step):
            bottom = min(height, top + step)
            yield slice(top, bottom), self.rows(top, bottom)


def _verified(device: torch.device) -> bool:
    """Whether the band arithmetic equals ``F.interpolate`` on this device type (probes of odd sizes, small bands,
    up- and downsampling, each axis unchanged, a subset of the channels)."""
    key = device.type
    if key not in _VERIFIED:
        gen = torch.Generator().manual_seed(0)
        ok = True
        for (c, h, w), out in (((2, 13, 11), (157, 131)), ((5, 40, 30), (301, 203)), ((29, 16, 12), (97, 140)),
                               ((1, 50, 7), (50, 161)), ((4, 37, 61), (129, 601)), ((2, 64, 48), (41, 200)),
                               ((2, 20, 150), (77, 150))):
            maps = (torch.randn(c, h, w, generator=gen) * 4).to(device)
            up = BandUpsampler(maps, out, verify=False)  # every probe is above the small-output size
            full = up.full()
            banded = torch.cat([band for _, band in up.bands(max_elements=5 * c * out[1])], dim=1)
            last = torch.tensor([c - 1], device=device)
            ok = ok and torch.equal(banded, full) and torch.equal(up.rows(3, 9, last), full[c - 1:, 3:9])
        _VERIFIED[key] = ok
        if not ok:
            log.info("bilinear bands do not reproduce F.interpolate on %s; upsampling whole maps there", key)
    return _VERIFIED[key]


def first_argmax(band: torch.Tensor, out: torch.Tensor | None = None,
                 classes: torch.Tensor | None = None) -> torch.Tensor:
    """(C, rows, W) -> (rows, W) uint8 index of the first maximum over C (``argmax(0)``, NaN counting as the
    maximum as there). ``out``: a (rows, W) uint8 tensor to fill instead of a new one. ``classes``: the class id
    of each plane, increasing (at most 255), to give instead of the plane index (``classes[argmax(0)]``).

    PyTorch's index reductions (``argmax``, ``torch.max(dim)``) are not vectorised on the CPU, its value
    reductions and arithmetic are (~20x apart on a (29, 6, 6000) band). So finite values take
    :func:`_ranked_argmax` (value reductions and arithmetic only, the same indices exactly), a few MB of rows at a
    time; anything else (NaN or inf, denormals flushed to zero) ``torch.max(band, 0)``, one reduction, 8-10x
    faster than ``argmax(0)`` over the class stride."""
    channels, height, width = band.shape
    if out is None:
        out = torch.empty((height, width), dtype=torch.uint8, device=band.device)
    ids = torch.arange(channels, device=band.device) if classes is None else classes.to(band.device)
    if channels > _MAX_RANKED_CHANNELS or int(ids[-1]) > _MAX_RANKED_CHANNELS or not _denormals_kept(band.device):
        out.copy_(ids[torch.max(band, 0).indices])
        return out
    rank = ((_MAX_RANKED_CHANNELS + 1 - ids).float() * _TINY)[:, None, None]
    step = rows_per_band(channels, width, BAND_ELEMENTS)
    scratch = None
    for top in range(0, height, step):
        part = band[:, top:top + step]
        if scratch is None or scratch.shape != part.shape:
            scratch = torch.empty(part.shape, dtype=torch.float32, device=band.device)
        if not _ranked_argmax(part, rank, scratch, out[top:top + step]):
            out[top:top + step] = ids[torch.max(part, 0).indices]
    return out


_MAX_RANKED_CHANNELS = 255  # ranks and class ids stay exact small integers (uint8 result)
_SPREAD = 2.0 ** 100
_TINY = 2.0 ** -100


def _ranked_argmax(band: torch.Tensor, rank: torch.Tensor, scratch: torch.Tensor, out: torch.Tensor) -> bool:
    """First-maximum class ids of a (C, rows, W) float32 band into ``out`` with value reductions and arithmetic
    only; False (``out`` untouched) where the band's maximum is not finite somewhere.

    ``rank``: (C, 1, 1), ``(256 - class id) * 2**-100``, decreasing. With ``m`` the maximum over classes, each
    plane's key is ``rank + (v - m) * 2**100``: ``v - m`` is exactly 0 where ``v == m`` (+0 and -0 alike) and
    otherwise at most -2**-149 (denormals kept: :func:`_denormals_kept`), so the key is at most -2**-49 + 2**-92,
    negative, while a maximum's key is its rank exactly (scaling by powers of two is exact). The maximum key is
    the rank of the first class holding the maximum: its id is ``256 - max key * 2**100``, as argmax. A NaN or inf
    makes ``m`` non-finite (NaN propagates through amax); -inf values alone give -inf keys."""
    top = band.amax(0)
    if not math.isfinite(float(top.sum())):  # a value reduction; an overflowing sum only costs the slow path
        return False
    torch.sub(band, top, out=scratch)
    torch.add(rank, scratch, alpha=_SPREAD, out=scratch)
    out.copy_(scratch.amax(0).mul_(-_SPREAD).add_(_MAX_RANKED_CHANNELS + 1))
    return True


def _denormals_kept(device: torch.device) -> bool:
    """Whether this thread's float32 arithmetic on ``device`` keeps denormals (no flush-to-zero or
    denormals-are-zero, e.g. ``torch.set_flush_denormal(True)``), probed with the :func:`_ranked_argmax` ops
    themselves: class 1 is larger by a denormal difference."""
    probe = torch.tensor([[[1.2e-38]], [[1.5e-38]]], dtype=torch.float32, device=device)
    index = torch.zeros((1, 1), dtype=torch.uint8, device=device)
    rank = torch.tensor([256.0 * _TINY, 255.0 * _TINY], device=device)[:, None, None]
    return _ranked_argmax(probe, rank, torch.empty_like(probe), index) and int(index) == 1


def class_candidates(maps: torch.Tensor) -> torch.Tensor:
    """(C, h, w) bool: whether class c can be the maximum anywhere in the source cell whose top-left is (y, x).

    An output pixel's value of class c is a convex combination of c's values at the (up to) 4 source pixels around
    it, so it lies between their min and max, up to a few float32 roundings. A class whose max over a cell is below
    the largest of the classes' mins there (minus a margin 8x those roundings) cannot be the maximum anywhere in
    that cell."""
    c, h, w = maps.shape
    down = torch.clamp(torch.arange(h, device=maps.device) + 1, max=h - 1)
    right = torch.clamp(torch.arange(w, device=maps.device) + 1, max=w - 1)
    pair = torch.maximum(maps, maps[:, down])
    hi = torch.maximum(pair, pair[:, :, right])
    pair = torch.minimum(maps, maps[:, down])
    lo = torch.minimum(pair, pair[:, :, right])
    # each computed value is within ~8 float32 ulps of the largest |value|; 2^-18 of the largest |logit| is 8x that
    tol = float(maps.abs().max()) * 2.0 ** -18 + 1e-30
    return hi >= lo.max(dim=0, keepdim=True).values - tol
