"""Where a ``predict --engine ray`` run's time and CPU went, from what each shard reports: per model worker (the
shards and inputs it was given, its CPU time, its thread settings) and the run split into start-up (until the last
worker that did any work had its model built) and steady state (from then to the last shard's end), whose rate is
what a run over millions of inputs gets once the fixed start-up is paid.

Times are epoch seconds (``time.time()``) taken in the workers and the driver: one clock on one machine, clocks
kept in sync on a cluster."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ShardSpan", "WorkerUsage", "steady_state"]


@dataclass
class WorkerUsage:
    """One model worker (``host:pid``). ``start_cpu_s``: its process's CPU seconds until its predictor was built
    (Ray's worker start, imports, building the model); ``cpu_s``: CPU seconds in its shards; ``inputs``: inputs
    given to its model."""

    name: str
    ready_at: float
    start_cpu_s: float
    torch_threads: int
    cv2_threads: int
    shards: int = 0
    inputs: int = 0
    cpu_s: float = 0.0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> WorkerUsage:
        return cls(str(stats["worker"]), float(stats["ready_at"]), 0.0, int(stats["torch_threads"]),
                   int(stats["cv2_threads"]))

    def add(self, stats: Mapping[str, Any]) -> None:
        """Count one committed shard's stats (``start_cpu_s`` comes with the worker's first shard only)."""
        self.shards += 1
        self.inputs += int(stats["predicted"])
        self.cpu_s += float(stats["cpu_s"])
        self.start_cpu_s += float(stats["start_cpu_s"])

    def line(self) -> str:
        return (f"{self.name}: {self.shards} shard(s), {self.inputs} input(s) predicted, CPU {self.cpu_s:.2f} s in "
                f"shards + {self.start_cpu_s:.2f} s start, threads torch {self.torch_threads} / cv2 "
                f"{self.cv2_threads}")


@dataclass(frozen=True)
class ShardSpan:
    """When a worker ran one shard, and how many inputs its model was given in it."""

    began: float
    ended: float
    inputs: int


def steady_state(spans: Iterable[ShardSpan], ready_at: float) -> tuple[float, float, float] | None:
    """(inputs/s, seconds, workers busy) over the window from ``ready_at`` (the last worker ready) to the last
    shard's end: the inputs of each shard counted in proportion to its time inside the window; "workers busy": the
    mean number of shards running at once in it (the workers' count when dispatch keeps them all fed, whatever the
    machine's load). None when no shard ran in it (a run too small to reach a steady state)."""
    spans = list(spans)
    if not spans:
        return None
    end = max(s.ended for s in spans)
    window = end - ready_at
    if window <= 0:
        return None
    inputs = busy = 0.0
    for s in spans:
        inside = min(s.ended, end) - max(s.began, ready_at)
        if inside > 0:
            inputs += s.inputs * inside / max(s.ended - s.began, 1e-9)
            busy += inside
    return (inputs / window, window, busy / window) if inputs > 0 else None
