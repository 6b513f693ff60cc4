"""Where and how models run: the one place that turns a user's device choice into a ``torch.device``.

Kept dependency-light (torch only, imported lazily) so every sub-command, the Predictor, training and curation
share it without pulling in models or pipelines.
"""
from __future__ import annotations

import re

from sapiens2.errors import DeviceError

__all__ = ["resolve_device", "available_devices"]

_DEVICE = re.compile(r"^(?P<type>cpu|cuda|mps)(?::(?P<index>\d+))?$")


def _mps_available(torch) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """The device names this machine and torch build can run on, best first (``cuda:0``.., ``mps``, ``cpu``)."""
    import torch

    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available(torch):
        names.append("mps")
    return names + ["cpu"]


def resolve_device(device=None, local_rank: int | None = None):
    """A ``torch.device`` for ``device``: None / "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N",
    "mps" or a ``torch.device``.

    ``local_rank`` (torchrun's LOCAL_RANK): a bare or automatic CUDA device becomes ``cuda:<local_rank>`` (modulo
    the device count for "auto"), so each process of a multi-GPU run takes its own GPU.

    Raises :class:`DeviceError` -- naming the devices that exist -- for a name torch does not know, CUDA in a
    build or on a machine without it, a CUDA index out of range, or MPS where it is unavailable. Checking here
    turns what would be a raw "Torch not compiled with CUDA enabled" traceback at the first ``.to()`` into one
    clear message before any model is loaded.
    """
    import torch

    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            index = None if local_rank is None else local_rank % torch.cuda.device_count()
            return torch.device("cuda", index) if index is not None else torch.device("cuda")
        return torch.device("mps") if _mps_available(torch) else torch.device("cpu")
    match = _DEVICE.match(text)
    if match is None:
        raise DeviceError(f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N or mps "
                          f"(available here: {', '.join(available_devices())})")
    kind, index = match["type"], match["index"]
    if kind == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch build has no CUDA (torch {torch.__version__})" if torch.version.cuda is None
                   else f"torch {torch.__version__} finds no usable CUDA GPU (driver or CUDA_VISIBLE_DEVICES?)")
            raise DeviceError(f"CUDA is not available: {why}; available devices: {', '.join(available_devices())}")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise DeviceError(f"device {text!r} does not exist: this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1})")
        if index is None and local_rank is not None:
            index = local_rank
        return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")
    if kind == "mps":
        if not _mps_available(torch):
            raise DeviceError(f"MPS (Apple GPU) is not available with torch {torch.__version__} on this machine; "
                              f"available devices: {', '.join(available_devices())}")
        return torch.device("mps")
    if index is not None and int(index) != 0:
        raise DeviceError(f"device {text!r} does not exist: use cpu")
    return torch.device("cpu")
