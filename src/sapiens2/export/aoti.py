"""AOTInductor packages (``--format aoti``): the exported program compiled ahead of time to a shared library of C++
(CPU) or Triton (CUDA) kernels with the weights inside, in a ``.pt2`` package that runs without Python tracing,
without torch.compile at run time and without a compiler on the machine that loads it.

Writing one needs a C++ compiler (torch's own search: ``$CXX``, else ``g++``; ``clang++`` on macOS);
:func:`require_compiler` names the fix when there is none. The metadata travels inside the package: AOTInductor's
own metadata map (``aot_inductor.metadata``), key ``sapiens2``, which torch keeps beside the compiled library and
returns from ``get_metadata()``; ``read_export_metadata`` reads it from the archive without loading the library.

A package is machine code for the CPU it was compiled on (vector ISA picked by inductor: AVX2, AVX-512, AMX, ...),
or for one GPU architecture: the metadata's ``engine`` entry records the device, OS, machine and the CPU features
present at build, and :func:`check_package_target` refuses a package whose code this CPU cannot run (an illegal
instruction would kill the process) instead of loading it. Kernels read the OpenMP thread count at run time
(``cpp.dynamic_threads``), so a package built with one thread still uses every thread it is given.
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import ExportedModelError, ExportError, one_line_reason
from ..io.writers import atomic_open
from .metadata import METADATA_KEY, ExportMetadata

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")  # the device types AOTInductor compiles for here
REBUILD = "re-export it on this machine: sapiens2 export --format aoti ... (or delete it from the export cache)"
# CPU features the compiled kernels may use, each with torch's compiler-free check of this CPU
CPU_FEATURES = (("avx2", "_is_avx2_supported"), ("avx512", "_is_avx512_supported"),
                ("avx512_vnni", "_is_vnni_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"),
                ("amx_tile", "_is_amx_tile_supported"), ("amx_fp16", "_is_amx_fp16_supported"))


def require_compiler() -> str:
    """The C++ compiler inductor will use; ExportError naming the fix when there is none (AOTInductor compiles the
    kernels and the wrapper to a shared library, also for CUDA)."""
    from torch._inductor import cpp_builder, exc

    try:
        return cpp_builder.get_cpp_compiler()
    except (exc.InvalidCxxCompiler, RuntimeError, OSError) as error:
        wanted = {"win32": "cl (MSVC)", "darwin": "$CXX, else clang++"}.get(sys.platform, "$CXX, else g++")
        raise ExportError(f"--format aoti compiles C++ and no C++ compiler was found ({wanted}; "
                          f"{one_line_reason(error)}): install one (Debian/Ubuntu: apt-get install g++; macOS: "
                          "xcode-select --install) or point $CXX at it, or use --format torch-export or onnx") from None


def cpu_features() -> dict[str, bool]:
    """This CPU's features from :data:`CPU_FEATURES` (False where this torch has no check)."""
    return {name: bool(getattr(torch.cpu, check, lambda: False)()) for name, check in CPU_FEATURES}


def current_target(device: torch.device | str = "cpu") -> dict:
    """What a package compiled here for ``device`` is tied to. ExportError for a device AOTInductor does not
    compile for."""
    kind = torch.device(device).type
    if kind not in DEVICES:
        raise ExportError(f"AOTInductor packages are built for {' or '.join(DEVICES)} here, not {kind}: use --device "
                          "cpu, or --format torch-export / onnx")
    target = {"device": kind, "platform": sys.platform, "machine": platform.machine(), "torch": torch.__version__}
    if kind == "cuda":
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return {**target, "gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
    return {**target, "cpu_features": cpu_features()}


def check_package_target(meta: ExportMetadata, path, target: dict) -> None:
    """ExportedModelError naming the fix when the package in ``path`` was compiled for another device type, OS,
    machine, GPU architecture, or uses CPU features this CPU lacks (``target``: :func:`current_target` here)."""
    built = meta.engine or {}
    if not built:
        raise ExportedModelError(f"{path}: its metadata does not say what it was compiled for; {REBUILD}")
    if built.get("device") != target["device"]:
        raise ExportedModelError(f"{path} was compiled for {built.get('device')}, not {target['device']}: run it with "
                                 f"--device {built.get('device')}, or {REBUILD}")
    for key, what in (("platform", "OS"), ("machine", "machine"), ("compute_capability", "GPU compute capability")):
        if str(built.get(key)) != str(target.get(key)):
            raise ExportedModelError(f"{path} was compiled for {what} {built.get(key)!r} and this one is "
                                     f"{target.get(key)!r}: a compiled package only runs where its code can; {REBUILD}")
    lacking = [name for name, used in (built.get("cpu_features") or {}).items()
               if used and not (target.get("cpu_features") or {}).get(name)]
    if lacking:
        raise ExportedModelError(f"{path} was compiled on a CPU with {', '.join(lacking)} and this CPU lacks "
                                 f"{'it' if len(lacking) == 1 else 'them'} (its code would stop at an illegal "
                                 f"instruction); {REBUILD}")


def compile_package(program, meta: ExportMetadata, output: str | os.PathLike, device="cpu") -> ExportMetadata:
    """Compile the exported ``program`` with AOTInductor into the package ``output`` (written atomically), the
    metadata (``engine``: :func:`current_target`) inside; returns that metadata."""
    require_compiler()
    meta = replace(meta, engine=current_target(device))
    configs = {"aot_inductor.metadata": {METADATA_KEY: meta.to_json()},
               "cpp.dynamic_threads": True}  # the run's thread count, not the export's
    try:
        with atomic_open(Path(output)) as f:
            torch._inductor.aoti_compile_and_package(program, package_path=f, inductor_configs=configs)
    except Exception as exc:
        raise ExportError(f"AOTInductor could not compile the model ({one_line_reason(exc)}); use --format "
                          "torch-export or onnx") from exc
    return meta


def package_metadata_text(archive: zipfile.ZipFile) -> str | None:
    """The sapiens2 metadata JSON of an AOTInductor package (from the metadata map torch stores beside the
    compiled library), or None when it has none."""
    import json

    for name in archive.namelist():
        if "/data/aotinductor/" in name and name.endswith("_metadata.json"):
            try:
                text = json.loads(archive.read(name)).get(METADATA_KEY)
            except (ValueError, AttributeError):
                continue
            if text:
                return text
    return None


def package_runner(path: Path, meta: ExportMetadata, device):
    """The package loaded on ``device`` (checked against this machine first) as ``run(x) -> [outputs]``."""
    target = current_target(device)
    check_package_target(meta, path, target)
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise ExportedModelError(f"{path}: AOTInductor cannot load it ({one_line_reason(exc)}); {REBUILD}") from None
    where = torch.device(device) if target["device"] == "cuda" else torch.device("cpu")

    def run(x: torch.Tensor):
        return list(compiled(x.to(where, torch.float32).contiguous()))

    return run
