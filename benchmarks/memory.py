"""Peak memory and wall time of ``sapiens2 predict`` per task on large photos, and the pixel limit on a huge PNG.

    .venv/bin/python benchmarks/memory.py [--tasks seg,pose,normal,pointmap,albedo,matting] [--sizes 4k,24mp,50mp]
                                          [--src PATH] [--huge] [--keep DIR]

Every case is one child process running the real CLI in-process (``sapiens2.cli.main.main``: reading, the model,
post-processing, writing every output file) on one JPEG, with a random-weight ``sapiens2_tiny`` checkpoint at
``--input-size 256x192`` (so the model itself costs almost nothing), under an address-space limit
(``--as-limit``, default 6 GB) so that a regression cannot take the machine down. The child reports its own peak
resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``), the wall time of ``main()`` (model loading included,
interpreter start-up excluded) and its CPU time (user + system, all threads, interpreter start-up included: on a
machine shared with other jobs the wall time mostly measures the others, the CPU time much less so).

Baseline, measured in the same run: the same task on a 64x48 image (interpreter, torch, the model). The figure
that must stay small is the growth over it per output pixel: ``(peak - baseline) / (H * W)`` bytes per pixel,
which should be about constant across sizes (linear growth with a small constant).

``--src PATH`` runs the cases against another source tree (e.g. an older commit exported with
``git archive <commit> src | tar -x -C /tmp/before``) for before/after figures in the same conditions.
``--huge``: a 20000x20000 PNG (mostly flat, about 1 MB, written row by row without holding it): refused with
the default limit (time to refuse), then seg with ``--max-pixels 0`` (peak memory, wall).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

TASKS = ("seg", "pose", "normal", "pointmap", "albedo", "matting")
SIZES = {"4k": (2160, 3840), "24mp": (4000, 6000), "50mp": (5792, 8688)}  # (H, W)
BASE_SIZE = (48, 64)
INPUT = "256x192"
POINTMAP_INPUT = (256, 192)
THREADS: int | None = None  # the tiny pointmap head's scale branch is built for its input size

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
from sapiens2.cli.main import main
rc = main(sys.argv[1:])
wall = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_SELF)
print("@@" + json.dumps({"rc": rc, "wall_s": wall, "cpu_s": use.ru_utime + use.ru_stime,
                          "peak_bytes": use.ru_maxrss * 1024}))
"""


def photo(path: Path, hw: tuple[int, int], seed: int = 0) -> Path:
    """A smooth random colour JPEG with a little noise (decodes like a photo, unlike flat or noise images)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    small = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8), dst=image)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def flat_png(path: Path, side: int) -> Path:
    """A side x side RGB PNG, grey with a darker square, streamed row by row (never held whole)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    plain = b"\0" + bytes([200, 200, 200]) * side
    square = b"\0" + bytes([200, 200, 200]) * (side // 4) + bytes([60, 90, 120]) * (side // 2) + \
        bytes([200, 200, 200]) * (side - side // 4 - side // 2)
    packer = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        data = bytearray()
        for row in range(side):
            data += packer.compress(square if side // 4 <= row < 3 * side // 4 else plain)
            if len(data) > 1 << 20:
                f.write(chunk(b"IDAT", bytes(data)))
                data.clear()
        data += packer.flush()
        f.write(chunk(b"IDAT", bytes(data)) + chunk(b"IEND", b""))
    return path


def checkpoints(folder: Path, tasks) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    from sapiens2.models.task_model import build_model

    paths = {}
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        model = build_model(task, "sapiens2_tiny", img_size=POINTMAP_INPUT if task == "pointmap" else (256, 192))
        paths[task] = folder / f"tiny_{task}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[task]))
    return paths


def run_case(src: Path, task: str, ckpt: Path, image: Path, out: Path, as_limit: int, extra=()) -> dict:
    argv = ["predict", "--checkpoint", f"{task}={ckpt}", "--input-size", INPUT, "--device", "cpu",
            "--no-progress", "--detector", "none", "--overwrite", "-o", str(out), str(image), *extra]
    env = dict(os.environ, PYTHONPATH=str(src))
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))

    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True,
                          preexec_fn=limit)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    if not lines:
        return {"rc": proc.returncode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(lines[-1][2:])
    result["summary"] = [ln.strip() for ln in proc.stdout.splitlines() if "failed" in ln or "skipped " in ln][:2]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    p.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"),
                   help="source tree to measure (default: this checkout's)")
    p.add_argument("--huge", action="store_true", help="also the 20000x20000 PNG (refusal, then seg without limit)")
    p.add_argument("--as-limit", type=float, default=6e9, help="address-space limit of each child, bytes")
    p.add_argument("--keep", default=None, help="keep the inputs and outputs in this folder")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the children (e.g. 1 on a machine shared with other jobs)")
    args = p.parse_args()
    global THREADS
    THREADS = args.threads
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    src = Path(args.src).resolve()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="s2mem-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpts = checkpoints(work, tasks)
    images = {"base": photo(work / "base.jpg", BASE_SIZE)}
    for name in sizes:
        images[name] = photo(work / f"{name}.jpg", SIZES[name], seed=1)
    as_limit = int(args.as_limit)
    print(f"source: {src}   threads: {THREADS or 'default'}")
    print(f"{'task':<9} {'image':<6} {'MP':>6} {'peak GB':>8} {'wall s':>7} {'cpu s':>6} {'B/px over base':>15}")
    for task in tasks:
        base = run_case(src, task, ckpts[task], images["base"], work / "out", as_limit)
        if "error" in base:
            print(f"{task:<9} base   failed: {base['error']}")
            continue
        print(f"{task:<9} {'base':<6} {0:>6.1f} {base['peak_bytes'] / 1e9:>8.2f} {base['wall_s']:>7.2f} "
              f"{base['cpu_s']:>6.2f} {'':>15}")
        for name in sizes:
            r = run_case(src, task, ckpts[task], images[name], work / "out", as_limit)
            pixels = SIZES[name][0] * SIZES[name][1]
            if "error" in r or r["rc"] != 0:
                print(f"{task:<9} {name:<6} {pixels / 1e6:>6.1f} failed: {r.get('error') or r.get('summary')}")
                continue
            per_px = (r["peak_bytes"] - base["peak_bytes"]) / pixels
            print(f"{task:<9} {name:<6} {pixels / 1e6:>6.1f} {r['peak_bytes'] / 1e9:>8.2f} {r['wall_s']:>7.2f} "
                  f"{r['cpu_s']:>6.2f} {per_px:>15.1f}", flush=True)
    if args.huge:
        huge = flat_png(work / "huge.png", 20000)
        print(f"\n20000x20000 PNG ({huge.stat().st_size / 1e6:.1f} MB file)")
        code = (f"import time, sys; sys.path.insert(0, {str(src)!r}); from sapiens2.io import load_image\n"
                f"t = time.perf_counter()\ntry:\n    load_image({str(huge)!r})\nexcept Exception as e:\n"
                f"    print(f'refused in {{(time.perf_counter() - t) * 1000:.1f}} ms: {{e}}')")
        print(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip())
        if "seg" in ckpts:
            r = run_case(src, "seg", ckpts["seg"], huge, work / "out", as_limit)
            print(f"seg, default limit: exit {r.get('rc')}, whole CLI {r.get('wall_s', 0):.2f} s "
                  f"(model loading included), {r.get('summary')}")
            r = run_case(src, "seg", ckpts["seg"], huge, work / "out", as_limit, ["--max-pixels", "0"])
            if "error" in r:
                print(f"seg, --max-pixels 0: failed: {r['error']}")
            else:
                per_px = (r["peak_bytes"] - base_peak(src, ckpts, images, work, as_limit)) / 4e8
                print(f"seg, --max-pixels 0: exit {r['rc']}, peak {r['peak_bytes'] / 1e9:.2f} GB, wall "
                      f"{r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s, {per_px:.1f} B/px over base")


def base_peak(src, ckpts, images, work, as_limit) -> int:
    return run_case(src, "seg", ckpts["seg"], images["base"], work / "out", as_limit)["peak_bytes"]


if __name__ == "__main__":
    main()
