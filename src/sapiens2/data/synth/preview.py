"""Contact sheet of samples with overlays (keypoints and skeleton, part colours, normals, depth) for eyeballing."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..specs import keypoint_info, seg_classes


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray | None = None,
                   radius: int = 1) -> np.ndarray:
    """RGB image with the skeleton, visible keypoints (filled) and hidden ones (small hollow)."""
    info = keypoint_info()
    out = np.ascontiguousarray(image.copy())
    for k, person in enumerate(keypoints):
        if boxes is not None:
            x, y, w, h = boxes[k]
            cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), (255, 255, 255), 1)
        for (a, b), colour in zip(info.skeleton, info.skeleton_colors):
            if person[a, 2] > 0 and person[b, 2] > 0:
                pa = tuple(int(round(v)) for v in person[a, :2])
                pb = tuple(int(round(v)) for v in person[b, :2])
                cv2.line(out, pa, pb, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
        for i in np.flatnonzero(person[:, 2] > 0):
            p = tuple(int(round(v)) for v in person[i, :2])
            colour = tuple(int(c) for c in info.colors[i])
            if person[i, 2] >= 2:
                cv2.circle(out, p, radius, colour, -1, cv2.LINE_AA)
            else:
                cv2.circle(out, p, radius, (40, 40, 40), 1)
    return out


def sample_panels(sample: dict[str, Any]) -> np.ndarray:
    """One row of five panels: RGB, RGB + keypoints, parts over RGB, normals, depth."""
    image = sample["image"]
    palette = seg_classes().palette
    parts = palette[sample["seg"]]
    fg = sample["mask"].astype(bool)[..., None]
    parts = np.where(fg, (0.75 * parts + 0.25 * image).astype(np.uint8), (image * 0.5).astype(np.uint8))
    normal = np.where(fg, np.clip((sample["normal"] * np.array([1, -1, -1]) + 1) * 127.5, 0, 255), 0).astype(np.uint8)
    depth = sample["depth"]
    depth_vis = np.zeros(depth.shape, dtype=np.uint8)
    if fg.any():
        d = depth[fg[..., 0]]
        lo, hi = float(d.min()), float(d.max())
        depth_vis[fg[..., 0]] = (255 * (1 - (d - lo) / max(hi - lo, 1e-6)) * 0.85 + 38).astype(np.uint8)
    depth_rgb = cv2.applyColorMap(depth_vis, cv2.COLORMAP_INFERNO)[..., ::-1]
    depth_rgb = np.where(fg, depth_rgb, 0).astype(np.uint8)
    kp = draw_keypoints(image, sample["keypoints"], sample["boxes"])
    return np.concatenate([image, kp, parts, normal, depth_rgb], axis=1)


def contact_sheet(samples: list[dict[str, Any]], columns: int = 2) -> np.ndarray:
    """Grid of :func:`sample_panels` rows (RGB uint8) with a thin separator."""
    if not samples:
        raise ValueError("contact_sheet needs at least one sample")
    tiles = [np.pad(sample_panels(s), ((2, 2), (2, 2), (0, 0)), constant_values=255) for s in samples]
    rows = []
    for r in range(0, len(tiles), columns):
        row = tiles[r:r + columns]
        row += [np.full_like(tiles[0], 255)] * (columns - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)
