"""``torch.compile`` for the Predictor (``--compile``): settings, the per-device default mode, and fixed shapes.

Compiled once per input shape and cached by torch (``dynamic=False``: each shape gets its own specialised graph).
To keep the number of shapes small, and to let CUDA graphs (``mode="reduce-overhead"``) replay, a runner pads each
batch up to a power of two no larger than its batch size (:func:`padded_batch`) and drops the padding afterwards:
at most log2(batch size) + 1 graphs per task.

Default: off (``--compile`` turns it on). Measured on a shared 2-core CPU (README, Benchmark): compiling took 389 s
for the tiny arch (then 3.8x faster: it is overhead-bound) and 299 s for 0.1b (at most 1.16x: its float32 matmuls
are already near the machine's ceiling), so it pays only for long runs. On CUDA the default mode is
``reduce-overhead`` (CUDA graphs remove the launch cost of the many small kernels per block); not measured here
(no GPU was available): measure with ``sapiens2 benchmark --backend torch-compile --compile-mode ...``.
"""
from __future__ import annotations

from dataclasses import dataclass

from sapiens2.errors import Sapiens2Error

__all__ = ["COMPILE_MODES", "CompileSettings", "compile_model", "default_compile_mode", "padded_batch",
           "parse_compile"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class CompileSettings:
    """``mode``: a torch.compile mode (:data:`COMPILE_MODES`); ``backend``: torch.compile's backend ("inductor";
    "eager"/"aot_eager" trace without generating code, for tests)."""

    mode: str = "default"
    backend: str = "inductor"

    def __post_init__(self):
        if self.mode not in COMPILE_MODES:
            raise Sapiens2Error(f"unknown compile mode {self.mode!r}; use one of {', '.join(COMPILE_MODES)}")

    @property
    def cuda_graphs(self) -> bool:
        """Whether compiled calls may replay CUDA graphs (outputs are overwritten by the next call: copy them)."""
        return self.backend == "inductor" and self.mode in ("reduce-overhead", "max-autotune")


def default_compile_mode(device) -> str:
    """reduce-overhead (CUDA graphs) on CUDA, default elsewhere."""
    import torch

    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def parse_compile(value, device) -> CompileSettings | None:
    """A user's ``compile`` choice -> settings, or None for eager. ``False``/None/"off" -> eager; ``True``/"on" ->
    the device's default mode; a mode name; or CompileSettings."""
    if isinstance(value, CompileSettings):
        return value
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("off", "false", "no")):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in ("on", "true", "yes", "auto")):
        return CompileSettings(default_compile_mode(device))
    if isinstance(value, str):
        return CompileSettings(value.strip().lower())
    raise Sapiens2Error(f"compile must be True/False, a mode ({', '.join(COMPILE_MODES)}) or CompileSettings, "
                        f"got {value!r}")


def compile_model(model, settings: CompileSettings):
    """The compiled callable (torch compiles lazily, at the first call of each shape)."""
    import torch

    if not hasattr(torch, "compile"):
        raise Sapiens2Error(f"torch {torch.__version__} has no torch.compile; upgrade torch (>= 2.0) or run without "
                            "--compile")
    mode = None if settings.mode == "default" or settings.backend != "inductor" else settings.mode
    return torch.compile(model, mode=mode, backend=settings.backend, dynamic=False)


def padded_batch(n: int, cap: int) -> int:
    """The batch ``n`` inputs are padded to: the next power of two, at most ``cap`` (``n`` itself beyond it)."""
    if n >= cap:
        return n
    size = 1
    while size < n:
        size *= 2
    return min(size, cap)
