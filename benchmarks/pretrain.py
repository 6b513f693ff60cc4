"""MAE-trick cost at high resolution: a masked student pass against a full-sequence pass, same run, same machine.

    .venv/bin/python benchmarks/pretrain.py                     # sapiens2_0.1b, 1024x768, mask 0.75, inference
    .venv/bin/python benchmarks/pretrain.py --train             # forward + backward of the student as well
    .venv/bin/python benchmarks/pretrain.py --arch tiny --size 256 192 --repeats 5

Prints the median time of (a) the backbone on the full sequence (9 + h*w tokens), (b) the backbone on the
visible tokens only (9 + K, K = (1 - ratio) h*w) and their ratio (b)/(a). ``--train`` also times forward +
backward of the masked student with the light decoder against forward + backward of the full backbone.
Timings on a shared CPU are noisy; the ratio is the figure to read.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sapiens2_0.1b")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("H", "W"))
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train", action="store_true", help="also time forward + backward")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from sapiens2 import build_backbone
    from sapiens2.training.pretrain.masking import MaskSpec, split_indices
    from sapiens2.training.pretrain.model import ObjectiveConfig, PretrainStudent

    dev = torch.device(args.device)
    torch.manual_seed(0)
    backbone = build_backbone(args.arch, img_size=tuple(args.size)).to(dev)
    h, w = backbone.grid_size(*args.size)
    x = torch.randn(args.batch, 3, *args.size, device=dev)
    gen = torch.Generator().manual_seed(0)
    masks = torch.stack([MaskSpec(args.ratio).make(h, w, gen) for _ in range(args.batch)])
    keep, masked = (t.to(dev) for t in split_indices(masks))
    print(f"{args.arch} at {args.size[0]}x{args.size[1]} on {dev} ({torch.get_num_threads()} threads): "
          f"{h * w} patches, {keep.shape[1]} visible (mask ratio {args.ratio}), batch {args.batch}")

    backbone.eval()
    with torch.no_grad():
        full = timed(lambda: backbone.forward_tokens(x), args.repeats)
        part = timed(lambda: backbone.forward_tokens(x, keep=keep), args.repeats)
    print(f"inference  full sequence {full:8.3f} s   visible only {part:8.3f} s   fraction {part / full:.3f}")

    if args.train:
        cfg = ObjectiveConfig()
        student = PretrainStudent(backbone, cfg).to(dev).train()

        def masked_step():
            xx = x[None]
            out = student(xx, keep[None], masked[None])
            (out["pixels"].float().mean() + out["patch_logits"].float().mean() + out["cls_logits"].float().mean()
             ).backward()

        def full_step():
            backbone.forward_tokens(x).float().mean().backward()

        t_full = timed(full_step, args.repeats)
        t_masked = timed(masked_step, args.repeats)
        print(f"train step full backbone fwd+bwd {t_full:8.3f} s   masked student (+decoder, heads) fwd+bwd "
              f"{t_masked:8.3f} s   fraction {t_masked / t_full:.3f}")


if __name__ == "__main__":
    main()
