"""Constant-velocity Kalman filter on a person box, the motion model of SORT (Bewley et al. 2016) and ByteTrack
(Zhang et al. 2022).

State ``(cx, cy, w, h, vcx, vcy, vw, vh)`` in pixels and pixels per frame; the measurement is the box
``(cx, cy, w, h)``. Noise standard deviations are proportional to the box height (ByteTrack's choice: the same
filter works for near and far people): position ``POSITION_NOISE * h``, velocity ``VELOCITY_NOISE * h``.
"""
from __future__ import annotations

import numpy as np

POSITION_NOISE = 1.0 / 20.0
VELOCITY_NOISE = 1.0 / 160.0
_DIM = 4


def xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)[:4]
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)])


def cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy, w, h = state[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """One track's box filter: :meth:`predict` once per frame, :meth:`update` when a detection is matched."""

    def __init__(self, box_xyxy: np.ndarray):
        z = xyxy_to_cxcywh(box_xyxy)
        self.x = np.concatenate([z, np.zeros(_DIM)])
        h = z[3]
        std = np.array([2 * POSITION_NOISE * h] * _DIM + [10 * VELOCITY_NOISE * h] * _DIM)
        self.P = np.diag(std ** 2)
        self.F = np.eye(2 * _DIM)
        self.F[:_DIM, _DIM:] = np.eye(_DIM)
        self.H = np.eye(_DIM, 2 * _DIM)

    def _process_noise(self) -> np.ndarray:
        h = max(self.x[3], 1.0)
        std = np.array([POSITION_NOISE * h] * _DIM + [VELOCITY_NOISE * h] * _DIM)
        return np.diag(std ** 2)

    def predict(self) -> np.ndarray:
        """Advance one frame; returns the predicted box (xyxy). Width and height are kept positive."""
        self.x = self.F @ self.x
        for size, rate in ((2, 6), (3, 7)):
            if self.x[size] < 1.0:  # a shrinking box must not invert: stop its size change
                self.x[size], self.x[rate] = 1.0, 0.0
        self.P = self.F @ self.P @ self.F.T + self._process_noise()
        return self.box

    def update(self, box_xyxy: np.ndarray) -> None:
        z = xyxy_to_cxcywh(box_xyxy)
        R = np.diag((POSITION_NOISE * max(self.x[3], 1.0)) ** 2 * np.ones(_DIM))
        S = self.H @ self.P @ self.H.T + R
        gain = np.linalg.solve(S, self.H @ self.P).T
        self.x = self.x + gain @ (z - self.H @ self.x)
        self.P = (np.eye(2 * _DIM) - gain @ self.H) @ self.P

    @property
    def box(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.x)

    @property
    def velocity(self) -> np.ndarray:
        """(vcx, vcy) pixels per frame."""
        return self.x[_DIM:_DIM + 2].copy()


__all__ = ["BoxKalman", "cxcywh_to_xyxy", "xyxy_to_cxcywh"]
