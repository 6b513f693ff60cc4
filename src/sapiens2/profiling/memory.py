"""Peak memory of a block of work: on CUDA the caching allocator's peak (``torch.cuda.max_memory_allocated``);
on the CPU the process's resident-set high-water mark (``VmHWM``), reset before the block by writing 5 to
``/proc/self/clear_refs`` (Linux), so the figure covers the block and not what ran before it. tracemalloc would
miss torch's own allocations, so it is not used. Where the reset is not possible the figure is None (unknown),
never a misleading number."""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PeakMemory", "measure_peak_memory"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class PeakMemory:
    """What :func:`measure_peak_memory` found: ``peak_bytes`` the highest use during the block (CPU: resident set
    of the whole process; CUDA: allocated tensors), ``delta_bytes`` that peak minus the use at the block's start
    (what the block itself added). None when not measurable here."""

    how: str = "unavailable"
    peak_bytes: int | None = None
    delta_bytes: int | None = None


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_cpu_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def measure_peak_memory(device):
    """``with measure_peak_memory(device) as peak: ...`` fills ``peak`` (a :class:`PeakMemory`) at the end."""
    import torch

    device = torch.device(device)
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result.how, result.peak_bytes, result.delta_bytes = "torch.cuda.max_memory_allocated", peak, peak - start
        return
    if device.type == "cpu" and _reset_cpu_peak():
        start = _status_kib("VmRSS")
        yield result
        peak = _status_kib("VmHWM")
        if start is not None and peak is not None:
            result.how, result.peak_bytes, result.delta_bytes = "VmHWM", peak * 1024, max(0, peak - start) * 1024
        return
    yield result
