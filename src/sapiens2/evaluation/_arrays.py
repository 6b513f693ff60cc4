"""Input checks shared by the metric accumulators (NumPy in, float64 sums)."""
from __future__ import annotations

import numpy as np


def as_batch(array, name: str, trailing: int) -> np.ndarray:
    """``array`` as (N, *rest) where a single item has ``trailing`` dims (e.g. 2 for (H, W), 3 for (H, W, 3))."""
    a = np.asarray(array)
    if a.ndim == trailing:
        a = a[None]
    if a.ndim != trailing + 1:
        raise ValueError(f"{name} must have {trailing} dims (one image) or {trailing + 1} (a batch), "
                         f"got shape {a.shape}")
    return a


def vectors(array, name: str) -> np.ndarray:
    """(N, H, W, 3) float64 from one (H, W, 3) image or a batch."""
    a = as_batch(array, name, 3)
    if a.shape[-1] != 3:
        raise ValueError(f"{name} must be (H, W, 3) or (N, H, W, 3) (channels last), got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def batch_mask(mask, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    """(N, H, W) bool for images of ``shape`` (N, H, W, ...); None = all True; > 0 = valid."""
    n, h, w = shape[:3]
    if mask is None:
        return np.ones((n, h, w), bool)
    m = as_batch(mask, name, 2)
    if m.shape[1:] != (h, w) or m.shape[0] not in (1, n):
        raise ValueError(f"{name} must be (H, W) or (N, H, W) matching {(n, h, w)}, got shape {np.shape(mask)}")
    return np.broadcast_to(m > 0, (n, h, w))


def check_same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} must have the same shape, got {a.shape} and {b.shape}")
