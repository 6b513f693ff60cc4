"""Loading never holds the weights twice: peak RSS of a fresh process stays near one file size."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from sapiens2 import build_backbone

# Runs in a fresh interpreter so ru_maxrss measures only this load. The weights are touched afterwards
# (summed), so memory-mapped pages count too: the test measures resident weights, not lazy mappings.
CHILD = textwrap.dedent("""
    import json, os, resource, sys
    import torch, safetensors.torch
    from sapiens2.checkpoints import load_backbone

    def peak_bytes():
        # VmHWM is this process image's peak RSS. ru_maxrss would do on a fresh process, but Linux carries
        # the parent's peak over fork+exec, so a big test runner would hide the load: use it only as a fallback.
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) * 1024
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    path = sys.argv[1]
    torch.set_num_threads(1)
    baseline = peak_bytes()
    model = load_backbone(path, **json.loads(sys.argv[2]))
    total = sum(float(p.float().sum()) for p in model.parameters())
    print(json.dumps({"baseline": baseline, "peak": peak_bytes(), "file": os.path.getsize(path),
                      "dtype": str(next(model.parameters()).dtype), "finite": total == total}))
""")


def run_child(path, **kwargs) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(kwargs)], capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_peak_rss_below_one_and_a_half_file_sizes(tmp_path, suffix):
    # sapiens2_0.1b in bfloat16: 114 M parameters, a 228 MB file (small enough for CI, big enough to measure).
    meta = build_backbone("0.1b", device="meta").state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.rand(v.shape, generator=gen) * 0.02).to(torch.bfloat16) for k, v in meta.items()}
    path = tmp_path / f"sapiens2_0.1b_bf16{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    del state

    try:
        result = run_child(path)
    finally:
        path.unlink()  # pytest keeps recent tmp dirs; do not leave 228 MB behind
    grown = result["peak"] - result["baseline"]
    assert grown > 0.8 * result["file"]  # the weights really were read (touched) and measured
    assert result["dtype"] == "torch.bfloat16" and result["finite"]
    assert result["file"] > 200e6
    assert grown < 1.5 * result["file"], f"peak RSS grew {grown / 1e6:.0f} MB for a {result['file'] / 1e6:.0f} MB file"
