"""What the device is, as a benchmark must say it: the CPU's model and the vector/matrix features that decide
which fast paths exist (AVX2, AVX-512, AVX-512 VNNI and BF16, AMX), the cores this process may use and torch's
thread count; or the GPU's name, compute capability and memory."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["CPU_FEATURES", "DeviceInfo", "cpu_features", "describe_device"]

# /proc/cpuinfo flags that decide the CPU fast paths (int8 dot products: VNNI/AMX; bf16: AVX512_BF16/AMX)
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                "amx_bf16", "neon", "asimd")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # cpu, cuda, mps
    name: str  # CPU model name or GPU name
    features: tuple[str, ...] = ()  # CPU flags of CPU_FEATURES present
    cores: int | None = None  # CPUs this process may run on
    torch_threads: int | None = None
    capability: str | None = None  # CUDA compute capability, e.g. "9.0"
    memory_gib: float | None = None  # GPU memory
    torch_version: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    def summary(self) -> str:
        """One line, e.g. ``cpu: AMD EPYC (2 cores, 2 torch threads; avx2 avx512f avx512_vnni)``."""
        if self.kind == "cpu":
            feats = " ".join(self.features) or "no AVX2/AVX-512/AMX flags found"
            return f"cpu: {self.name} ({self.cores} cores, {self.torch_threads} torch threads; {feats})"
        extra = f", capability {self.capability}" if self.capability else ""
        mem = f", {self.memory_gib:.0f} GiB" if self.memory_gib else ""
        return f"{self.kind}: {self.name}{extra}{mem}"


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; the platform's processor string and no flags elsewhere."""
    try:
        text = path.read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", set()
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:  # x86: flags; ARM: Features
            flags = set(value.split())
    return name or platform.processor() or platform.machine() or "unknown CPU", flags


def cpu_features(flags: set[str] | None = None) -> tuple[str, ...]:
    """The fast-path flags of :data:`CPU_FEATURES` this CPU has, in that order."""
    flags = _cpuinfo()[1] if flags is None else flags
    return tuple(f for f in CPU_FEATURES if f in flags)


def describe_device(device) -> DeviceInfo:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", props.name, capability=f"{props.major}.{props.minor}",
                          memory_gib=props.total_memory / 2**30, torch_version=torch.__version__,
                          extra={"cuda": torch.version.cuda, "multiprocessors": props.multi_processor_count})
    if device.type == "mps":
        return DeviceInfo("mps", f"Apple GPU ({platform.machine()})", torch_version=torch.__version__)
    name, flags = _cpuinfo()
    from sapiens2.runtime import usable_cores

    return DeviceInfo("cpu", name, cpu_features(flags), usable_cores(), torch.get_num_threads(),
                      torch_version=torch.__version__)
