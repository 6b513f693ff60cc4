"""UDP Gaussian heatmap codec with DARK-UDP sub-pixel decoding, as the official pose models use.

Coordinates on the encode side are crop pixels (``input_size`` = (w, h) of the crop, e.g. 768x1024). The decode
returns ``xy / (heatmap_size - 1) * input_size`` exactly like the official code: that is *not* crop pixels (those
would use ``input_size - 1``) but is what ``crop.decoded_to_image`` expects, and the pair maps heatmap peaks back to
image coordinates exactly. All work is vectorised over instances and keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["encode_udp_heatmaps", "heatmap_maxima", "refine_dark_udp", "decode_udp_heatmaps"]

_BOX_HALF = 3  # raw values within this many pixels of the peak cannot reach a blurred pixel outside the window
_CHUNK_BYTES = 8 << 20  # maps per chunk of the one pass: a chunk stays in the L2/L3 cache while it is read


def _check_size(name: str, size) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 2:
        raise ValueError(f"{name} must be (width, height) with both sides >= 2, got {size!r}")
    return int(size[0]), int(size[1])


def encode_udp_heatmaps(
    keypoints: np.ndarray,
    input_size: tuple[int, int] = (768, 1024),
    heatmap_size: tuple[int, int] = (192, 256),
    sigma: float = 6.0,
    visible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian target heatmaps for keypoints given in crop pixels.

    keypoints: (K, 2) or (N, K, 2) x, y in the ``input_size`` crop; visible: (K,) or (N, K), < 0.5 means unlabeled.
    Returns heatmaps (K, H, W) float32 (maximum over the N instances) and weights (N, K) float32 (0 for unlabeled or
    outside the heatmap). Each Gaussian is cut to the pixels within 3*sigma (per axis) of the rounded centre, as in
    the official encoder (identical to it whenever 3*sigma is an integer).
    """
    in_w, in_h = _check_size("input_size", input_size)
    hm_w, hm_h = _check_size("heatmap_size", heatmap_size)
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be (K, 2) or (N, K, 2), got shape {np.shape(keypoints)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    n, k = kp.shape[:2]
    vis = np.ones((n, k), np.float32) if visible is None else np.asarray(visible, np.float32).reshape(n, k)

    # Keypoints in heatmap pixels; the UDP stride is (input - 1) / (heatmap - 1), kept in float32 like the official.
    stride = ((np.array([in_w, in_h]) - 1) / (np.array([hm_w, hm_h]) - 1)).astype(np.float32)
    hm_kp = kp / stride
    radius = 3.0 * sigma
    centre = np.trunc(hm_kp + 0.5)  # the official rounding: int() of x + 0.5 (truncates toward zero)
    low = np.trunc(centre - radius)
    high = np.trunc(centre + radius + 1)
    inside = (low[..., 0] < hm_w) & (low[..., 1] < hm_h) & (high[..., 0] >= 0) & (high[..., 1] >= 0)
    labelled = vis >= 0.5
    weights = np.where(labelled & ~inside, 0.0, vis).astype(np.float32)
    draw = labelled & inside  # (N, K)

    # The 2-D Gaussian is separable: build per-axis profiles (zero outside the window) and take outer products.
    def profile(axis: int, length: int) -> np.ndarray:
        grid = np.arange(length, dtype=np.float32)
        d = grid - hm_kp[..., axis, None]
        g = np.exp(-(d * d) / np.float32(2 * sigma * sigma))
        window = np.abs(grid - centre[..., axis, None]) <= radius
        return np.where(window & draw[..., None], g, np.float32(0)).astype(np.float32)

    gx = profile(0, hm_w)  # (N, K, W)
    gy = profile(1, hm_h)  # (N, K, H)
    heatmaps = np.zeros((k, hm_h, hm_w), np.float32)
    for i in range(n):  # max over instances; each step is one vectorised outer product over all keypoints
        np.maximum(heatmaps, gy[i, :, :, None] * gx[i, :, None, :], out=heatmaps)
    return heatmaps, weights


def _row_maxima(maps: np.ndarray) -> np.ndarray:
    """(M, H, W) -> (M, H) maximum of each row: the decode's only pass over whole maps (torch reduces short rows
    several times faster than NumPy). On one thread: the pass is memory-bound, and a second OpenMP thread only
    adds a join that waits whenever the cores are busy (measured 2 ms alone, 13 ms beside other work)."""
    import torch

    from sapiens2.tasks.upsample import band_threads

    with band_threads(torch.device("cpu")):
        return torch.from_numpy(np.ascontiguousarray(maps, np.float32)).amax(dim=-1).numpy()


def _maxima_from_rows(maps: np.ndarray, row_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat-argmax location (first occurrence in row-major order) and value of each (H, W) map from its row maxima:
    the first row holding the maximum, then the first column of that row holding it."""
    m = len(maps)
    y = row_max.argmax(axis=1)
    vals = row_max[np.arange(m), y]
    x = maps[np.arange(m), y].argmax(axis=1)
    return np.stack([x, y], axis=-1).astype(np.float32), vals


def heatmap_maxima(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel argmax location (x, y) as float32 and max value; location -1 where the max is <= 0.

    heatmaps: (..., H, W). Returns locations (..., 2) and values (...).
    """
    hm = np.asarray(heatmaps, np.float32)
    h, w = hm.shape[-2:]
    flat = hm.reshape(-1, h, w)
    locs, vals = _maxima_from_rows(flat, _row_maxima(flat))
    locs[vals <= 0] = -1
    return locs.reshape(hm.shape[:-2] + (2,)), vals.reshape(hm.shape[:-2])


def _blur_zero_border(maps: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur (OpenCV sigma-0 rule) of each (H, W) map with zeros outside the map.

    A constant-0 border equals the official zero padding followed by a blur. One OpenCV call per map is faster
    than one call on all maps stacked (each map stays in cache) and gives identical values.
    """
    out = np.empty_like(maps)
    for i in range(len(maps)):
        cv2.GaussianBlur(maps[i], (kernel, kernel), 0, dst=out[i], borderType=cv2.BORDER_CONSTANT)
    return out


def _blurred_maxima(maps: np.ndarray, which: np.ndarray, kernel: int) -> np.ndarray:
    """The maximum of the zero-border blur of each map in ``which``, one map at a time into one reused buffer
    (no copy of the selected maps, no stack of blurred ones)."""
    buffer = np.empty(maps.shape[1:], np.float32)
    out = np.empty(len(which), np.float32)
    for n, i in enumerate(which):
        cv2.GaussianBlur(maps[i], (kernel, kernel), 0, dst=buffer, borderType=cv2.BORDER_CONSTANT)
        out[n] = buffer.max()
    return out


def _blur_windows(crops: np.ndarray, kernel: int) -> np.ndarray:
    """Blur of (M, S, S) zero-bordered raw windows, kept on the inner (S - kernel + 1)^2 pixels (those whose blur
    only sees the window): all windows in one OpenCV call, stacked on top of each other (the margins keep every
    window's values independent of its neighbours in the stack). Bit for bit the blur of the whole maps there:
    the same OpenCV kernel sees the same values."""
    m, size = crops.shape[:2]
    stacked = cv2.GaussianBlur(crops.reshape(m * size, size), (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
    margin = kernel // 2
    return stacked.reshape(m, size, size)[:, margin:size - margin, margin:size - margin]


def _window_rows(flat: np.ndarray, first_row: np.ndarray, y: np.ndarray, h: int, reach: int,
                 out: np.ndarray) -> None:
    """Rows ``y - reach .. y + reach`` of each map (map ``i`` starts at row ``first_row[i]`` of ``flat``, the maps
    as (M * H, W)), clamped to the map, into ``out`` (len(y) * (2*reach+1), W): one gather of whole rows (a map's
    window rows are one contiguous block, read at memory speed)."""
    index = first_row[:, None] + np.clip(y[:, None] + np.arange(-reach, reach + 1), 0, h - 1)
    np.take(flat, index.reshape(-1), axis=0, out=out, mode="clip")  # "clip": indices are valid; no buffering


@dataclass
class _Windows:
    """What the DARK step needs from each map: the raw window around the integer peak (x, y) and the largest raw
    value that can reach a blurred pixel outside the blurred window."""

    x: np.ndarray  # (M,) int64
    y: np.ndarray  # (M,) int64
    peak: np.ndarray  # (M,) float32 raw maximum
    crops: np.ndarray  # (M, S, S) float32 raw windows, zero outside the map
    reach_out: np.ndarray  # (M,) float32, >= 0


def _cut_windows(rows: np.ndarray, x: np.ndarray, w: int, crops: np.ndarray, band_max: np.ndarray) -> None:
    """From each map's window rows (M, S, W) (:func:`_window_rows`, S = 2*reach+1, the peak row in the middle):
    the (M, S, S) raw window around column ``x`` into ``crops`` (columns clamped: zeroed later where outside the
    map) and into ``band_max`` the largest value of the rows within _BOX_HALF of the peak outside the box's
    columns. ``rows`` is overwritten."""
    import torch

    m, size = rows.shape[:2]
    reach = size // 2
    rows_t = torch.from_numpy(rows)
    cols = np.clip(x[:, None] + np.arange(-reach, reach + 1), 0, w - 1)
    torch.gather(rows_t, 2, torch.from_numpy(cols)[:, None, :].expand(m, size, size), out=torch.from_numpy(crops))
    band = rows_t[:, reach - _BOX_HALF:reach + _BOX_HALF + 1]
    box = 2 * _BOX_HALF + 1
    band.scatter_(2, torch.from_numpy(cols[:, reach - _BOX_HALF:reach + _BOX_HALF + 1])[:, None, :].expand(m, box, box),
                  float("-inf"))  # clamped duplicates are columns of the box too
    torch.amax(band, dim=(1, 2), out=torch.from_numpy(band_max))


def _finish_windows(crops: np.ndarray, band_max: np.ndarray, row_max: np.ndarray, x: np.ndarray, y: np.ndarray,
                    w: int) -> _Windows:
    """Zero the window pixels outside the map; the largest raw value outside the box of half-size _BOX_HALF around
    each peak: rows away from the peak from the row maxima, the box's rows from ``band_max``."""
    m, size = crops.shape[:2]
    h = row_max.shape[1]
    reach = size // 2
    offsets = np.arange(-reach, reach + 1)
    edge = np.flatnonzero((y < reach) | (y >= h - reach) | (x < reach) | (x >= w - reach))
    if len(edge):  # windows that cross their map's border: zeros outside it (only those windows are touched)
        ys, xs = y[edge, None] + offsets, x[edge, None] + offsets
        inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
        crops[edge] = np.where(inside, crops[edge], np.float32(0))
    away = row_max.copy()  # the box's rows (clamped duplicates are box rows too) set to -inf
    np.put_along_axis(away, np.clip(y[:, None] + np.arange(-_BOX_HALF, _BOX_HALF + 1), 0, h - 1), -np.inf, axis=1)
    outside_rows = away.max(axis=1)
    reach_out = np.maximum(np.maximum(outside_rows, band_max), 0).astype(np.float32)
    return _Windows(x, y, row_max.max(axis=1), crops, reach_out)


def _window_reach(kernel: int) -> int:
    """Half-size of the raw window: the blurred window (the box plus a kernel margin) plus the kernel's margin."""
    return _BOX_HALF + 2 * (kernel // 2)


def _gather_windows(hm: np.ndarray, kernel: int) -> _Windows:
    """The decode's one pass over the maps, a chunk of maps at a time: row maxima (the only full read), the peak
    row, the window rows around it, and from those the window and the box's band, all while the chunk is in the
    CPU cache."""
    import torch

    from sapiens2.tasks.upsample import band_threads

    m, h, w = hm.shape
    reach = _window_reach(kernel)
    size = 2 * reach + 1
    step = max(1, _CHUNK_BYTES // (4 * h * w))
    flat = hm.reshape(m * h, w)
    row_max = np.empty((m, h), np.float32)
    rows = np.empty((min(m, step) * size, w), np.float32)
    crops = np.empty((m, size, size), np.float32)
    band_max = np.empty(m, np.float32)
    x = np.empty(m, np.int64)
    y = np.empty(m, np.int64)
    first_row = np.arange(m) * h
    with band_threads(torch.device("cpu")):
        tensor, row_max_t = torch.from_numpy(hm), torch.from_numpy(row_max)
        for start in range(0, m, step):
            stop = min(m, start + step)
            n = stop - start
            torch.amax(tensor[start:stop], dim=-1, out=row_max_t[start:stop])
            y[start:stop] = row_max[start:stop].argmax(axis=1)  # the first row holding the maximum
            part = rows[:n * size]
            _window_rows(flat, first_row[start:stop], y[start:stop], h, reach, part)
            part = part.reshape(n, size, w)
            x[start:stop] = part[:, reach].argmax(axis=1)  # the peak row's first column holding it: flat argmax
            _cut_windows(part, x[start:stop], w, crops[start:stop], band_max[start:stop])
    return _finish_windows(crops, band_max, row_max, x, y, w)


def _dark_step(win: _Windows, hm: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """(step_x, step_y) float64 of the DARK-UDP Taylor step for each window (see ``refine_dark_udp``)."""
    m, h, w = hm.shape
    x, y = win.x, win.y
    margin = kernel // 2
    half = margin + _BOX_HALF
    window = _blur_windows(win.crops, kernel)  # (M, 2*half+1, 2*half+1)
    if x.min() >= half and y.min() >= half and x.max() < w - half and y.max() < h - half:
        blurred_max = window.max(axis=(1, 2))  # every window inside its map (the usual case)
    else:
        offsets = np.arange(-half, half + 1)
        on_map = (((y[:, None] + offsets) >= 0) & ((y[:, None] + offsets) < h))[:, :, None] \
            & (((x[:, None] + offsets) >= 0) & ((x[:, None] + offsets) < w))[:, None, :]
        blurred_max = np.where(on_map, window, -np.inf).max(axis=(1, 2)).astype(np.float32)
    # The kernel's float32 weights may sum to a hair over 1: keep a margin far above that rounding.
    unproven = np.flatnonzero(blurred_max < win.reach_out * np.float32(1.0001))
    if len(unproven):  # rare for trained heatmaps (a second strong peak), usual for noise: blur those whole
        blurred_max[unproven] = _blurred_maxima(hm, unproven, kernel)
    return _taylor_step(window, blurred_max, win.peak, x - half, y - half, x, y, h, w)


def _taylor_step(window, blurred_max, original_max, ox, oy, x, y, h, w) -> tuple[np.ndarray, np.ndarray]:
    # Guard the (official-unguarded) case of a map whose blur has no positive value: leave it unscaled.
    gain = np.where(blurred_max > 0, original_max / np.where(blurred_max > 0, blurred_max, 1), 1).astype(np.float32)
    # Edge padding by one pixel == clamping the neighbour indices; only the 3x3 neighbourhood is needed.
    dxs = np.clip(np.stack([x - 1, x, x + 1], axis=1), 0, w - 1) - np.reshape(ox, (-1, 1))  # (V, 3)
    dys = np.clip(np.stack([y - 1, y, y + 1], axis=1), 0, h - 1) - np.reshape(oy, (-1, 1))
    patch = window[np.arange(len(x))[:, None, None], dys[:, :, None], dxs[:, None, :]]  # (V, 3, 3) [dy, dx]
    patch = np.log(np.clip(patch * gain[:, None, None], np.float32(1e-3), np.float32(50.0)))

    c = patch[:, 1, 1]
    dx = 0.5 * (patch[:, 1, 2] - patch[:, 1, 0])
    dy = 0.5 * (patch[:, 2, 1] - patch[:, 0, 1])
    dxx = patch[:, 1, 2] - 2 * c + patch[:, 1, 0]
    dyy = patch[:, 2, 1] - 2 * c + patch[:, 0, 1]
    dxy = 0.5 * (patch[:, 2, 2] - patch[:, 1, 2] - patch[:, 2, 1] + 2 * c
                 - patch[:, 1, 0] - patch[:, 0, 1] + patch[:, 0, 0])
    eps = float(np.finfo(np.float32).eps)
    a = dxx.astype(np.float64) + eps
    d = dyy.astype(np.float64) + eps
    b = dxy.astype(np.float64)
    det = a * d - b * b
    ok = np.isfinite(det) & (det != 0)  # a singular Hessian (flat log-map) gets no step instead of an exception
    safe = np.where(ok, det, 1.0)
    step_x = np.where(ok, (d * dx - b * dy) / safe, 0.0)
    step_y = np.where(ok, (a * dy - b * dx) / safe, 0.0)
    return step_x, step_y


def refine_dark_udp(locations: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int = 11, *,
                    whole_maps: bool = False, row_max: np.ndarray | None = None) -> np.ndarray:
    """One DARK-UDP Taylor step around integer heatmap maxima (heatmap pixels in, heatmap pixels out).

    locations: (M, 2) integer argmax positions (-1 = no peak, left unchanged); heatmaps: (M, H, W) raw maps.
    Steps: blur each map (zero padding), rescale it to its original max, clip to [1e-3, 50], log; take the gradient
    and Hessian from the 3x3 neighbourhood (edge-replicated at the border) and move by -(H + eps*I)^-1 g in float64.

    Only a window around each maximum is blurred (the step needs the 3x3 neighbourhood, and the rescaling the
    blurred map's maximum). The maximum is proven to lie in the window when the window's blurred maximum is at
    least every raw value that can reach a pixel outside it (a blur with non-negative weights summing to at most
    1 never exceeds the largest positive value under its kernel); maps where that fails are blurred whole. The
    result equals blurring whole maps bit for bit at the models' heatmap widths (192, 48: the same OpenCV kernel
    sees the same values at the window's pixels; tests/test_pose_codec.py checks it, borders and unproven maps
    included); other widths to float32 rounding (OpenCV blurs a map's last columns in a scalar loop);
    ``whole_maps=True`` blurs every map whole (the reference the benchmark and tests compare against).
    ``row_max``: the maps' row maxima (M, H) when the caller has them already (saves the one pass over the maps).
    """
    _check_kernel(blur_kernel_size)
    hm = np.asarray(heatmaps, np.float32)
    m, h, w = hm.shape
    locs = np.asarray(locations, np.float32).reshape(m, 2)
    valid = (locs[:, 0] >= 0) & (locs[:, 1] >= 0)
    out = locs.copy()
    if not valid.any():
        return out
    rows = np.flatnonzero(valid)
    row_max = _row_maxima(hm) if row_max is None else row_max
    if len(rows) < m:  # avoid copying all maps in the usual case where every channel has a peak
        hm, row_max = hm[rows], row_max[rows]
    x = locs[valid, 0].astype(np.int64)
    y = locs[valid, 1].astype(np.int64)
    if whole_maps:
        blurred = _blur_zero_border(hm, blur_kernel_size)
        blurred_max = blurred.reshape(len(rows), -1).max(axis=1)
        step_x, step_y = _taylor_step(blurred, blurred_max, row_max.max(axis=1), 0, 0, x, y, h, w)
    else:
        reach = _window_reach(blur_kernel_size)
        import torch

        from sapiens2.tasks.upsample import band_threads

        gathered = np.empty((len(x) * (2 * reach + 1), w), np.float32)
        _window_rows(hm.reshape(-1, w), np.arange(len(x)) * h, y, h, reach, gathered)
        with band_threads(torch.device("cpu")):
            size = 2 * reach + 1
            crops, band_max = np.empty((len(x), size, size), np.float32), np.empty(len(x), np.float32)
            _cut_windows(gathered.reshape(len(x), size, w), x, w, crops, band_max)
            win = _finish_windows(crops, band_max, row_max, x, y, w)
            step_x, step_y = _dark_step(win, hm, blur_kernel_size)
    out[rows, 0] = (locs[valid, 0] - step_x).astype(np.float32)
    out[rows, 1] = (locs[valid, 1] - step_y).astype(np.float32)
    return out


def _check_kernel(blur_kernel_size: int) -> None:
    if blur_kernel_size % 2 != 1 or blur_kernel_size < 3:
        raise ValueError(f"blur_kernel_size must be odd and >= 3, got {blur_kernel_size}")


def keypoint_index(keypoints, k: int) -> np.ndarray:
    """Channel indices from a ``keypoints=`` argument (indices or a boolean mask of length ``k``), checked."""
    index = np.asarray(keypoints)
    if index.dtype == bool:
        if index.shape != (k,):
            raise ValueError(f"a keypoints mask must have one entry per heatmap channel ({k}), got {index.shape}")
        return np.flatnonzero(index)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ValueError(f"keypoints must be a 1-D list of channel indices (or a boolean mask), got {keypoints!r}")
    index = index.astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= k):
        raise ValueError(f"keypoint indices must lie in 0..{k - 1} (the heatmap channels), got {index.min()}.."
                         f"{index.max()}")
    return index


def decode_udp_heatmaps(
    heatmaps: np.ndarray,
    input_size: tuple[int, int] = (768, 1024),
    blur_kernel_size: int = 11,
    *,
    keypoints=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and scores from heatmaps (K, H, W) or (B, K, H, W), official UDP + DARK-UDP decode.

    Returns keypoints (..., K, 2) float32 as ``xy / (heatmap_size - 1) * input_size`` (map them to the image with
    ``crop.decoded_to_image``) and scores (..., K) float32 = the max of the raw heatmap. A channel whose max is <= 0
    keeps location -1 before scaling (the official code would still apply a meaningless Taylor step there).

    ``keypoints``: decode only these channels (indices into K, or a boolean mask of length K); the outputs then
    have that many keypoints, in the order given, and the other maps are never read.

    One pass over the maps (a chunk at a time, in cache) finds each maximum, cuts the raw window around it and
    bounds what lies outside; the windows are then blurred together (see ``refine_dark_udp``).
    """
    hm = np.asarray(heatmaps)
    if hm.ndim not in (3, 4):
        raise ValueError(f"heatmaps must be (K, H, W) or (B, K, H, W), got shape {hm.shape}")
    _check_kernel(blur_kernel_size)
    in_w, in_h = _check_size("input_size", input_size)
    h, w = hm.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps must be at least 2x2, got {h}x{w}")
    if keypoints is not None:
        hm = hm[..., keypoint_index(keypoints, hm.shape[-3]), :, :]  # copies only the maps asked for
    hm = np.ascontiguousarray(hm, np.float32)
    lead = hm.shape[:-2]
    flat = hm.reshape(-1, h, w)
    if len(flat) == 0:
        return np.zeros(lead + (2,), np.float32), np.zeros(lead, np.float32)
    win = _gather_windows(flat, blur_kernel_size)
    scores = win.peak
    step_x, step_y = _dark_step(win, flat, blur_kernel_size)
    locs = np.stack([(win.x - step_x).astype(np.float32), (win.y - step_y).astype(np.float32)], axis=-1)
    locs[scores <= 0] = -1
    keypoints_out = locs.astype(np.float64) / [w - 1, h - 1] * [in_w, in_h]
    return keypoints_out.astype(np.float32).reshape(lead + (2,)), scores.astype(np.float32).reshape(lead)
