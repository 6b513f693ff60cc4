"""``sapiens2 benchmark``: each (task, backend, precision, batch size) timed on random inputs, with counted FLOPs,
the share of the device's measured matmul ceiling, peak memory and the error against PyTorch float32.

Figures are the best of ``iters`` timed calls after ``warmup`` calls (the device synchronised around each call);
the median is kept too. Best-of is the right summary on a shared machine: other work only ever adds time. What is
timed is the model alone, on an input already on the device (pre/post-processing and uploads are not included).
"""
from __future__ import annotations

import datetime
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sapiens2.profiling.backends import BackendOptions, find_backend
from sapiens2.profiling.device import DeviceInfo, describe_device
from sapiens2.profiling.flops import count_flops, measure_matmul_ceiling
from sapiens2.profiling.memory import measure_peak_memory

__all__ = ["BenchmarkConfig", "BenchmarkReport", "BenchmarkRow", "fastest", "recommended", "run_benchmark",
           "write_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkConfig:
    tasks: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W) of the model input (pose: the crop)
    backends: tuple[str, ...] = ("torch",)
    dtypes: tuple[str, ...] = ("float32",)
    batch_sizes: tuple[int, ...] = (1,)
    iters: int = 10
    warmup: int = 2
    device: str = "cpu"
    options: BackendOptions = field(default_factory=BackendOptions)
    measure_ceiling: bool = True
    seed: int = 0

    def __post_init__(self):
        from sapiens2.errors import UsageError

        if self.iters < 1 or self.warmup < 0:
            raise UsageError(f"iters must be >= 1 and warmup >= 0, got iters={self.iters}, warmup={self.warmup}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UsageError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        for name in self.backends:
            find_backend(name)  # an unknown name fails before any model is loaded


@dataclass
class BenchmarkRow:
    """One measured configuration. ``status``: ok, skipped (the backend does not run this precision here: see
    ``reason``) or failed (``reason`` holds the error). Times are per batch and per item (an image, or a person
    crop for pose); FLOPs are counted per item; ``ceiling_share`` = achieved / ceiling FLOP/s of this precision;
    ``rel_error`` = ||out - ref|| / ||ref|| against PyTorch float32 eager on the same input."""

    task: str
    backend: str
    dtype: str
    batch_size: int
    input_size: tuple[int, int]
    unit: str  # image, or crop for pose
    status: str = "ok"
    reason: str = ""
    prepare_s: float | None = None
    ms_per_batch: float | None = None
    ms_per_batch_median: float | None = None
    ms_per_item: float | None = None
    items_per_s: float | None = None
    flops_per_item: int | None = None
    achieved_flops: float | None = None
    ceiling_flops: float | None = None
    ceiling_share: float | None = None
    peak_memory_bytes: int | None = None
    peak_memory_delta_bytes: int | None = None
    memory_how: str = ""
    rel_error: float | None = None
    note: str = ""


@dataclass
class BenchmarkReport:
    device: DeviceInfo
    config: BenchmarkConfig
    rows: list[BenchmarkRow]
    ceilings: dict[str, float]  # precision -> measured matmul FLOP/s
    load_average: dict[str, tuple[float, float, float] | None]  # before / after
    started: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        config = asdict(self.config)
        config["options"] = {**asdict(self.config.options), "extra": dict(self.config.options.extra)}
        best, default = fastest(self.rows), recommended(self.rows)
        return {"device": self.device.to_dict(), "device_summary": self.device.summary(), "config": config,
                "ceilings_flops": self.ceilings, "load_average": self.load_average, "started": self.started,
                "seconds": self.seconds, "rows": [asdict(r) for r in self.rows],
                "fastest": None if best is None else {"backend": best.backend, "dtype": best.dtype,
                                                       "task": best.task, "batch_size": best.batch_size},
                "recommended": None if default is None else {"backend": default.backend, "dtype": default.dtype}}

    def to_markdown(self) -> str:
        lines = [f"Device: {self.device.summary()}; torch {self.device.torch_version}",
                 "Matmul ceiling (measured): " + (", ".join(f"{k} {v / 1e9:.1f} GFLOP/s"
                                                             for k, v in self.ceilings.items()) or "not measured"),
                 f"Load average before/after: {_fmt_load(self.load_average.get('before'))} / "
                 f"{_fmt_load(self.load_average.get('after'))}; best of {self.config.iters} after "
                 f"{self.config.warmup} warm-up", "",
                 "| task | input | backend | dtype | batch | ms/item | items/s | GFLOP/item | achieved GFLOP/s | "
                 "% of ceiling | peak mem MiB | rel. error | note |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            size = f"{r.input_size[0]}x{r.input_size[1]}"
            if r.status != "ok":
                lines.append(f"| {r.task} | {size} | {r.backend} | {r.dtype} | {r.batch_size} | {r.status} "
                             f"| | | | | | | {r.reason} |")
                continue
            mem = "" if r.peak_memory_delta_bytes is None else f"+{r.peak_memory_delta_bytes / 2**20:.0f}"
            lines.append(
                f"| {r.task} | {size} | {r.backend} | {r.dtype} | {r.batch_size} | {r.ms_per_item:.2f} / "
                f"{r.unit} | {r.items_per_s:.2f} | {_num(r.flops_per_item, 1e9, 3)} | "
                f"{_num(r.achieved_flops, 1e9, 1)} | {_num(r.ceiling_share, 0.01, 0)} | {mem} | "
                f"{'' if r.rel_error is None else f'{r.rel_error:.1e}'} | {r.note} |")
        best, default = fastest(self.rows), recommended(self.rows)
        if best is not None:
            lines += ["", f"Fastest here: {best.backend} {best.dtype} ({best.task}, batch {best.batch_size}: "
                          f"{best.ms_per_item:.2f} ms per {best.unit})"]
        if default is not None:
            lines.append(f"Default here (fastest within 2% of float32 and >= 10% faster than torch float32, else "
                         f"torch float32): {default.backend} {default.dtype}")
        return "\n".join(lines) + "\n"


def _num(value, scale: float, digits: int) -> str:
    return "" if value is None else f"{value / scale:.{digits}f}"


def _fmt_load(load) -> str:
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


def _load_average():
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def fastest(rows: Sequence[BenchmarkRow], *, task: str | None = None, batch_size: int | None = None,
            max_rel_error: float | None = None) -> BenchmarkRow | None:
    """The measured row with the most items per second (optionally for one task / batch size, and only among
    rows whose error against float32 is at most ``max_rel_error``): the configuration to default to on this
    machine, chosen from measurement."""
    ok = [r for r in rows if r.status == "ok" and r.items_per_s is not None
          and (task is None or r.task == task) and (batch_size is None or r.batch_size == batch_size)
          and (max_rel_error is None or (r.rel_error is not None and r.rel_error <= max_rel_error))]
    return max(ok, key=lambda r: r.items_per_s, default=None)


def recommended(rows: Sequence[BenchmarkRow], *, task: str | None = None, batch_size: int | None = None,
                max_rel_error: float = 0.02, min_gain: float = 1.10) -> BenchmarkRow | None:
    """The default to use on this machine, from measurement: the fastest row within ``max_rel_error`` of float32,
    taken only if it beats PyTorch float32 eager by at least ``min_gain`` (a smaller gain is within the noise of a
    shared machine and not worth lower precision); else the float32 eager row."""
    baseline = [r for r in rows if r.status == "ok" and r.backend == "torch" and r.dtype == "float32"
                and (task is None or r.task == task) and (batch_size is None or r.batch_size == batch_size)]
    base = max(baseline, key=lambda r: r.items_per_s, default=None)
    best = fastest(rows, task=task, batch_size=batch_size, max_rel_error=max_rel_error)
    if base is None or best is None:
        return best or base
    return best if best.items_per_s >= min_gain * base.items_per_s else base


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _flat_output(out):
    import torch

    if isinstance(out, (tuple, list)):
        return torch.cat([o.detach().float().reshape(-1).cpu() for o in out])
    return out.detach().float().reshape(-1).cpu()


def _rel_error(out, ref) -> float:
    a, b = _flat_output(out), _flat_output(ref)
    if a.shape != b.shape:
        raise ValueError(f"output shape {tuple(a.shape)} differs from the float32 reference's {tuple(b.shape)}")
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _time_calls(run, batch, device, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run(batch)
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def run_benchmark(config: BenchmarkConfig, load_model: Callable[[str], object], *,
                  on_row: Callable[[BenchmarkRow], None] | None = None) -> BenchmarkReport:
    """Measure every configuration of ``config``. ``load_model(task)``: the task model (float32, eval mode) on
    ``config.device``; called once per task. ``on_row``: called with each row as it is measured (progress)."""
    import torch

    from sapiens2.runtime import resolve_device

    device = resolve_device(config.device)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    load_before = _load_average()
    info = describe_device(device)
    ceilings: dict[str, float] = {}
    tried: set[str] = set()
    rows: list[BenchmarkRow] = []

    def ceiling(dtype: str) -> float | None:
        if not config.measure_ceiling:
            return None
        if dtype not in tried:
            tried.add(dtype)
            try:
                ceilings[dtype] = measure_matmul_ceiling(device, dtype)
            except Exception as exc:  # e.g. a precision this device's matmul lacks
                log.warning("no %s matmul ceiling on %s: %s", dtype, device, exc)
        return ceilings.get(dtype)

    def add(row: BenchmarkRow) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    h, w = config.input_size
    for task in config.tasks:
        model = load_model(task)
        unit = "crop" if task == "pose" else "image"
        gen = torch.Generator().manual_seed(config.seed)
        one = torch.randn(1, 3, h, w, generator=gen).to(device)
        flops_per_item = count_flops(model, one)
        for batch_size in config.batch_sizes:
            batch = torch.randn(batch_size, 3, h, w, generator=gen).to(device)
            with torch.inference_mode():
                reference = model(batch)
            for backend_name in config.backends:
                backend = find_backend(backend_name)
                for dtype in config.dtypes:
                    row = BenchmarkRow(task, backend.name, dtype, batch_size, (h, w), unit)
                    refusal = backend.refusal(device.type, dtype)
                    if refusal:
                        row.status, row.reason = "skipped", refusal
                        add(row)
                        continue
                    try:
                        start = time.perf_counter()
                        prepared = backend.prepare(model, batch, dtype, config.options)
                        out = prepared.run(batch)  # the first call (compilation, export) counts as preparation
                        _sync(device)
                        row.prepare_s = time.perf_counter() - start
                        row.rel_error = _rel_error(out, reference)
                        del out
                        with measure_peak_memory(device) as peak:
                            times = _time_calls(prepared.run, batch, device, config.iters, config.warmup)
                    except Exception as exc:  # one configuration's failure is a row, not the end of the run
                        log.warning("%s %s %s batch %d failed: %s", task, backend.name, dtype, batch_size, exc)
                        row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                        add(row)
                        continue
                    best = min(times)
                    row.ms_per_batch = best * 1e3
                    row.ms_per_batch_median = statistics.median(times) * 1e3
                    row.ms_per_item = row.ms_per_batch / batch_size
                    row.items_per_s = batch_size / best
                    row.flops_per_item = flops_per_item
                    row.achieved_flops = flops_per_item * batch_size / best
                    row.ceiling_flops = ceiling(dtype)
                    if row.ceiling_flops:
                        row.ceiling_share = row.achieved_flops / row.ceiling_flops
                    row.peak_memory_bytes, row.peak_memory_delta_bytes = peak.peak_bytes, peak.delta_bytes
                    row.memory_how, row.note = peak.how, prepared.note
                    add(row)
        del model
    return BenchmarkReport(info, config, rows, ceilings, {"before": load_before, "after": _load_average()},
                           started=started, seconds=time.perf_counter() - t0)


def write_report(report: BenchmarkReport, folder: str | os.PathLike, stem: str = "benchmark") -> tuple[Path, Path]:
    """``<folder>/<stem>.json`` and ``<folder>/<stem>.md``, each written atomically."""
    from sapiens2.io.writers import atomic_open, ensure_directory, write_json

    folder = ensure_directory(folder)
    json_path = write_json(folder / f"{stem}.json", report.to_dict())
    md_path = folder / f"{stem}.md"
    with atomic_open(md_path, "w") as f:
        f.write(report.to_markdown())
    return json_path, md_path

