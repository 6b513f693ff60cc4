"""Where and how models run, decided once for inference, training, pretraining, evaluation and curation:

- device: a user's choice (``auto`` -> cuda, mps, cpu) -> ``torch.device`` (:func:`resolve_device`);
- precision: the names users give (``auto``, ``fp32``/``float32``, ``bf16``/``bfloat16``, ``fp16``/``float16``/
  ``half``) -> a torch dtype, the autocast dtype on a device, and the autocast context (:func:`parse_precision`,
  :func:`autocast_dtype`, :func:`autocast`);
- pixel normalisation: the official mean/std every Sapiens2 model was trained with (:func:`normalise_pixels`).

Atomic writes live in :mod:`sapiens2.io.writers` (``atomic_open``, ``atomic_path``), the bottom layer.
Kept dependency-light (torch only, imported lazily) so every sub-command, the Predictor, training and curation
share it without pulling in models or pipelines.
"""
from __future__ import annotations

import contextlib
import os
import re

from sapiens2.errors import DeviceError, UsageError

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "autocast", "autocast_dtype", "available_devices", "normalise_pixels",
           "parse_precision", "pixel_norm_constants", "resolve_device", "usable_cores"]

# The official normalisation of every Sapiens2 model: RGB channel order, 0-255 scale.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

# Every precision name accepted anywhere (CLI --dtype/--precision, Predictor(dtype=), config files).
_PRECISION_NAMES = {"auto": "auto", "fp32": "float32", "float32": "float32", "bf16": "bfloat16",
                    "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16"}

_DEVICE = re.compile(r"^(?P<type>cpu|cuda|mps)(?::(?P<index>\d+))?$")


def usable_cores() -> int:
    """CPU cores this process may run on: the affinity mask (which containers and taskset narrow) where the
    system has one, else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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


def parse_precision(precision, allowed: tuple[str, ...] | None = None):
    """``"auto"`` or the torch dtype a precision name (or a torch dtype) stands for.

    ``allowed``: canonical dtype names (``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``) the caller
    supports; others raise :class:`UsageError` listing the accepted spellings.
    """
    import torch

    if isinstance(precision, torch.dtype):
        name = str(precision).removeprefix("torch.")
    else:
        name = _PRECISION_NAMES.get(str(precision).strip().lower().removeprefix("torch."))
    ok = tuple(_PRECISION_NAMES.values()) if allowed is None else allowed
    if name not in ok:
        spellings = [k for k, v in _PRECISION_NAMES.items() if v in ok]
        raise UsageError(f"precision must be one of {', '.join(spellings)}, got {precision!r}")
    return "auto" if name == "auto" else getattr(torch, name)


def autocast_dtype(precision, device):
    """The autocast dtype for ``precision`` on ``device``; None means plain float32.

    ``auto`` is bfloat16 on CUDA (the official training precision) and float32 elsewhere.
    """
    import torch

    dtype = parse_precision(precision)
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else None
    return None if dtype == torch.float32 else dtype


def autocast(device, dtype):
    """``torch.autocast`` on ``device``'s type for a reduced ``dtype``; a no-op context for None (float32)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


_NORM_CACHE: dict = {}


def pixel_norm_constants(device=None, dtype=None):
    """(mean, std) as (3, 1, 1) tensors on ``device`` in ``dtype`` (cached: normalising a batch costs no copy)."""
    import torch

    dtype = dtype or torch.float32
    key = (str(device), dtype)
    if key not in _NORM_CACHE:
        mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
        _NORM_CACHE[key] = (mean.to(device=device, dtype=dtype), std.to(device=device, dtype=dtype))
    return _NORM_CACHE[key]


def normalise_pixels(pixels):
    """(..., 3, H, W) RGB pixels on the 0-255 scale (float) -> the model's normalised input, same device/dtype."""
    mean, std = pixel_norm_constants(pixels.device, pixels.dtype)
    return (pixels - mean) / std
