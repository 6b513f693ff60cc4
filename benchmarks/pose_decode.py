"""Pose heatmap decoding for one person (308 keypoints): DARK-UDP with windowed blurs vs whole-map blurs.

Baseline measured in the same run ("before"): the decode as it was before windowing (flat argmax, then
``refine_dark_udp(..., whole_maps=True)``, which blurs every heatmap whole). "after": ``decode_udp_heatmaps`` on
all 308 maps, and with ``keypoints=`` the 17 COCO body points only (the other maps are never read). Heatmaps are
realistic: Gaussian peaks (sigma 2 in heatmap pixels, as a trained model's are) plus noise, at the heatmap sizes of
1024x768 and 256x192 crops. Prints best-of timings, the speed-up and whether the keypoints are identical (bit for
bit) to the baseline's.

    python benchmarks/pose_decode.py [--people 1] [--repeats 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sapiens2.tasks.pose.codec import decode_udp_heatmaps, encode_udp_heatmaps, refine_dark_udp
from sapiens2.tasks.pose.formats import keypoint_format


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for heatmap_size in [(192, 256), (48, 64)]:
        w, h = heatmap_size
        maps = []
        for _ in range(args.people):
            points = rng.uniform(0, [w - 1, h - 1], (308, 2)).astype(np.float32)
            scale = np.float32([(768 - 1) / (w - 1), (1024 - 1) / (h - 1)])
            person, _ = encode_udp_heatmaps(points * scale, (768, 1024), heatmap_size, sigma=2.0)
            maps.append(person + rng.normal(0, 0.02, person.shape).astype(np.float32))
        maps = np.concatenate(maps)
        def before():
            flat = maps.reshape(len(maps), -1)
            index = flat.argmax(axis=1)
            locations = np.stack([index % w, index // w], axis=-1).astype(np.float32)
            return refine_dark_udp(locations, maps, whole_maps=True)

        def after():
            return decode_udp_heatmaps(maps, (768, 1024))

        coco17 = keypoint_format("coco17").first
        def subset():
            return decode_udp_heatmaps(maps, (768, 1024), keypoints=coco17)

        # interleaved rounds, best of each: the machine's load changes under a long run
        whole = windowed = few = float("inf")
        for _ in range(3):
            whole = min(whole, best_seconds(before, args.repeats))
            windowed = min(windowed, best_seconds(after, args.repeats))
            few = min(few, best_seconds(subset, args.repeats))
        # the decode's own scaling applied to the baseline: equal arrays mean identical keypoints
        expected = (before().astype(np.float64) / [w - 1, h - 1] * [768, 1024]).astype(np.float32)
        identical = np.array_equal(after()[0], expected)
        diff = np.abs(after()[0] - expected).max()
        sub_diff = np.abs(subset()[0] - after()[0][coco17]).max()
        print(f"heatmaps {w}x{h}, {len(maps)} maps: decode before {1e3 * whole:7.2f} ms (baseline), "
              f"after {1e3 * windowed:6.2f} ms, x{whole / windowed:.1f} faster; keypoints identical: {identical} (max |diff| {diff:.1e} px)")
        print(f"heatmaps {w}x{h}, {len(coco17)} of {len(maps)} maps (keypoints=coco17): after {1e3 * few:6.2f} ms, "
              f"x{whole / few:.1f} faster than the whole decode before; max |diff| vs all maps {sub_diff:.1e}")

if __name__ == "__main__":
    main()
